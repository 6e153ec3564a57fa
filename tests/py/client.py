# One TCP or UDP echo to ADDR:PORT. Prints "ok", "bad-reply", "timeout" or the
# errno name of the failure, and exits 0 only for "ok".
# Usage: client.py tcp|udp ADDR PORT
import errno, socket, sys
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
try:
    if proto == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(1.5)
        s.connect((addr, port)); s.sendall(b"residency"); d = s.recv(64)
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(1.5)
        s.sendto(b"residency", (addr, port)); d, _ = s.recvfrom(64)
    print("ok" if d == b"residency" else "bad-reply")
    sys.exit(0 if d == b"residency" else 3)
except socket.timeout:
    print("timeout"); sys.exit(1)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno))); sys.exit(1)
