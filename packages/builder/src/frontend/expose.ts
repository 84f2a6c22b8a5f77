/** EXPOSE values → `port/proto` keys, like BuildKit's convert_expose.go. */

export class PortError extends Error {}

function parsePortNumber(raw: string): number {
  if (raw === '') throw new PortError('value is empty');
  if (!/^[+-]?\d+$/.test(raw)) throw new PortError('invalid syntax');
  const n = Number.parseInt(raw, 10);
  if (n < 0 || n > 65535) throw new PortError('value out of range (0–65535)');
  return n;
}

function parsePortRange(ports: string): [number, number] {
  if (ports === '') throw new PortError('empty string specified for ports');
  const dash = ports.indexOf('-');
  const start = dash < 0 ? ports : ports.slice(0, dash);
  const end = dash < 0 ? '' : ports.slice(dash + 1);
  const startPort = parsePortNumber(start);
  if (dash < 0 || start === end) return [startPort, startPort];
  const endPort = parsePortNumber(end);
  if (endPort < startPort) throw new PortError('invalid port range: ' + ports);
  return [startPort, endPort];
}

function isIP(s: string): boolean {
  if (/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(s)) return s.split('.').every((o) => Number(o) <= 255 && (o === '0' || !o.startsWith('0')));
  return /^[0-9a-fA-F:.]+$/.test(s) && s.includes(':');
}

/** One EXPOSE word (`80`, `80/tcp`, `53/udp`, `8000-8010`, even `[ip:]host:container`) → keys. */
export function parsePort(rawPort: string): string[] {
  const parts = rawPort.split(':');
  let ip = '';
  let hostPort = '';
  let containerPort: string;
  if (parts.length === 1) containerPort = parts[0]!;
  else if (parts.length === 2) [hostPort, containerPort] = [parts[0]!, parts[1]!];
  else if (parts.length === 3) [ip, hostPort, containerPort] = [parts[0]!, parts[1]!, parts[2]!];
  else {
    const n = parts.length;
    ip = parts.slice(0, n - 2).join(':');
    hostPort = parts[n - 2]!;
    containerPort = parts[n - 1]!;
  }
  const slash = containerPort.indexOf('/');
  const port = slash < 0 ? containerPort : containerPort.slice(0, slash);
  let proto = slash < 0 ? '' : containerPort.slice(slash + 1);
  if (port === '') throw new PortError(`invalid port: ${JSON.stringify(rawPort)}: no port specified`);
  switch (proto.toLowerCase()) {
    case '':
      proto = 'tcp';
      break;
    case 'tcp':
    case 'udp':
    case 'sctp':
      break;
    default:
      throw new PortError(`invalid port: ${JSON.stringify(rawPort)}: invalid proto: ${proto}`);
  }
  if (ip.startsWith('[')) {
    if (!ip.endsWith(']')) throw new PortError(`invalid IP address ${ip}`);
    ip = ip.slice(1, -1);
  }
  if (ip !== '' && !isIP(ip)) throw new PortError('invalid IP address: ' + ip);
  let startPort: number;
  let endPort: number;
  try {
    [startPort, endPort] = parsePortRange(port);
  } catch {
    throw new PortError('invalid containerPort: ' + port);
  }
  if (hostPort !== '') {
    let hs: number;
    let he: number;
    try {
      [hs, he] = parsePortRange(hostPort);
    } catch {
      throw new PortError('invalid hostPort: ' + hostPort);
    }
    if (endPort - startPort !== he - hs && endPort !== startPort) {
      throw new PortError(`invalid ranges specified for container and host Ports: ${port} and ${hostPort}`);
    }
  }
  const out: string[] = [];
  for (let p = startPort; p <= endPort; p++) out.push(`${p}/${proto.toLowerCase()}`);
  return out;
}
