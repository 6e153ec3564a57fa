# COUNT UDP datagrams to ADDR:PORT from one socket, as fast as it can.
# Prints how many sendto calls succeeded and how many failed.
# Usage: burst.py ADDR PORT COUNT
import socket, sys
addr, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
ok = failed = 0
for _ in range(count):
    try:
        s.sendto(b"residency", (addr, port)); ok += 1
    except OSError:
        failed += 1
print(ok, failed)
