import dgram from 'node:dgram';

/**
 * A minimal STUN Binding responder on loopback (RFC 5389: XOR-MAPPED-ADDRESS only). The werift
 * clients of the load generator point at it, because a werift agent given no STUN server
 * silently asks stun.l.google.com — traffic that must never leave this machine. `port`: where it
 * listens (0, the default: any free port).
 */
export function startStunResponder(port = 0): Promise<{ port: number; close(): void }> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (m, rinfo) => {
    if (m.length < 20 || m.readUInt16BE(0) !== 0x0001 || m.readUInt32BE(4) !== 0x2112a442) return;
    const res = Buffer.alloc(32);
    res.writeUInt16BE(0x0101, 0);
    res.writeUInt16BE(12, 2);
    m.copy(res, 4, 4, 20); // magic cookie + transaction id
    res.writeUInt16BE(0x0020, 20);
    res.writeUInt16BE(8, 22);
    res.writeUInt8(0x01, 25);
    res.writeUInt16BE(rinfo.port ^ 0x2112, 26);
    const ip = rinfo.address.split('.').map(Number);
    res.writeUInt32BE((((ip[0] << 24) | (ip[1] << 16) | (ip[2] << 8) | ip[3]) ^ 0x2112a442) >>> 0, 28);
    sock.send(res, rinfo.port, rinfo.address);
  });
  return new Promise((resolve) => sock.bind(port, '127.0.0.1', () => resolve({ port: sock.address().port, close: () => sock.close() })));
}
