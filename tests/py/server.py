# TCP and UDP echo server on [::]:PORT (IPv4 too, through mapped addresses).
# Usage: server.py PORT. Prints "ready" once both sockets are bound.
import socket, sys, threading
port = int(sys.argv[1])
def tcp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(128)
    while True:
        c, _ = s.accept()
        try:
            c.settimeout(2); c.sendall(c.recv(64))
        except OSError:
            pass
        finally:
            c.close()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(("::", port))
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
while True:
    d, a = u.recvfrom(2048)
    u.sendto(d, a)
