# An ICMP echo over a raw socket, as monitoring agents send it. (iputils `ping` first
# probes the route with a UDP `connect()`, which a port-restricted policy judges as
# UDP; this sends only ICMP.) Prints "ok", "timeout" or the errno name.
# Usage: ping.py ADDR
import errno, os, select, socket, struct, sys, time
addr = sys.argv[1]
v6 = ":" in addr
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident = os.getpid() & 0xffff
def csum(b):
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    n = (n >> 16) + (n & 0xffff); n += n >> 16
    return ~n & 0xffff
msg = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, 1) + b"residency!"
if not v6:
    msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
try:
    s.sendto(msg, (addr, 0))
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno))); sys.exit(1)
deadline = time.time() + 1
want = 129 if v6 else 0
while time.time() < deadline:
    r, _, _ = select.select([s], [], [], max(0, deadline - time.time()))
    if not r:
        break
    d = s.recv(2048)
    if not v6:
        d = d[(d[0] & 15) * 4:]
    if d[0] == want and struct.unpack("!H", d[4:6])[0] == ident:
        print("ok"); sys.exit(0)
print("timeout"); sys.exit(1)
