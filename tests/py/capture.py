# Every frame that arrives on IFNAME, appended to OUTFILE as one hex line each (raw
# bytes from the Ethernet header on). Frames this host sends itself (its echo replies,
# its neighbour advertisements) are left out: a leak test asks what *reached* the host.
# Prints "ready" once the socket is bound, so that nothing sent afterwards is missed.
# Usage: capture.py IFNAME OUTFILE
import os, socket, sys
ETH_P_ALL = 0x0003
ifname, outfile = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((ifname, ETH_P_ALL))
# O_APPEND and one write() per frame: a reader never sees half a line, except at the
# very end while a write is under way, which the reader skips.
fd = os.open(outfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
print("ready", flush=True)
while True:
    # 256 KiB: a veth may hand over a GRO-merged TCP frame far above the MTU.
    frame, (_, _, pkttype, _, _) = s.recvfrom(1 << 18)
    if pkttype == socket.PACKET_OUTGOING:
        continue
    os.write(fd, frame.hex().encode() + b"\n")
