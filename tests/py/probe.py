# Continuous prober: UDP to BOTH (allowed by every policy version under test) and
# to NEITHER (allowed by none) until the file STOP exists (at most 600 s). Prints
# packets sent, packets to BOTH that were refused, packets to NEITHER that passed.
# Usage: probe.py STOP BOTH NEITHER PORT
import os, socket, sys, time
stop, both, neither, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fam = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET
sb, sn = socket.socket(fam(both), socket.SOCK_DGRAM), socket.socket(fam(neither), socket.SOCK_DGRAM)
sent = wrongly_dropped = leaked = 0
deadline = time.time() + 600
while not os.path.exists(stop) and time.time() < deadline:
    for _ in range(50):
        sent += 1
        try:
            sb.sendto(b"residency", (both, port))
        except OSError:
            wrongly_dropped += 1
        try:
            sn.sendto(b"residency", (neither, port))
            leaked += 1
        except OSError:
            pass
print(sent, wrongly_dropped, leaked, flush=True)
