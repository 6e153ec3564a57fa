# Unconnected UDP sendto() to each destination twice, from one socket per family:
# the first call to a destination is judged by the sendmsg hook from the trie, the
# second may take the verdict its first packet left in the verdict cache. Reads
# "ADDR PORT" lines on stdin; prints "ERRNO ERRNO" per line (0: the call succeeded).
import socket, sys
socks = {
    4: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
    6: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
}
out = []
for line in sys.stdin:
    addr, port = line.split()
    s = socks[6 if ":" in addr else 4]
    errs = []
    for _ in range(2):
        try:
            s.sendto(b"residency", (addr, int(port)))
            errs.append(0)
        except OSError as e:
            errs.append(e.errno)
    out.append("%d %d" % tuple(errs))
print("\n".join(out), flush=True)
