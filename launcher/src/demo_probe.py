# The demo agent's probes, for what curl cannot do:
#   probe.py dns NAME...   one A query per name to the resolver of /etc/resolv.conf
#   probe.py udp HOST PORT one datagram, and how it failed
# Each prints one line: `NAME RESULT ms=N`.
import random
import socket
import struct
import sys
import time


def resolver():
    with open("/etc/resolv.conf") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
    return "127.0.0.1"


def dns(name):
    tid = random.randrange(65536)
    question = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.connect((resolver(), 53))
        s.send(packet)
        reply = s.recv(4096)
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error:" + (e.strerror or str(e)).replace(" ", "_")
    rcode = reply[3] & 15
    answers = struct.unpack(">H", reply[6:8])[0]
    names = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
    return "%s answers=%d" % (names.get(rcode, "rcode%d" % rcode), answers)


def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        s.send(b"hello from the agent")
        s.recv(4096)
        return "answered"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "error:" + (e.strerror or str(e)).replace(" ", "_")


def main():
    if sys.argv[1] == "dns":
        for name in sys.argv[2:]:
            t = time.time()
            result = dns(name)
            print("%s %s ms=%d" % (name, result, (time.time() - t) * 1000))
    elif sys.argv[1] == "udp":
        t = time.time()
        result = udp(sys.argv[2], sys.argv[3])
        print("%s:%s %s ms=%d" % (sys.argv[2], sys.argv[3], result, (time.time() - t) * 1000))


main()
