//! The wan's DNS and echo servers answer from the agent and count what they receive.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use bottleneck_lab::addr::{
    self, ECHO_PORT, ECHO_V4, ECHO_V6, ORIGIN_V4, ORIGIN_V6, OTHER_ORIGIN_V4, PRIVATE_V4,
};
use bottleneck_lab::{GatewayMode, Host, Lab, RecordType, ResponseCode, Transport, require_root};

#[test]
fn dns_server_answers_lab_names_and_counts_queries() {
    if !require_root("dns_server_answers_lab_names_and_counts_queries") {
        return;
    }
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let v4 = addr::dns_v4();
    let v6 = addr::dns_v6();
    let q = |server, name: &str, rtype| {
        lab.dns_query(Host::Agent, server, name, rtype)
            .unwrap_or_else(|e| panic!("{name} {rtype}: {e}"))
    };

    let a = q(v4, "allowed.test", RecordType::A);
    assert_eq!(a.rcode(), ResponseCode::NoError);
    assert!(a.message.metadata.authoritative);
    assert_eq!(a.ips(), vec![IpAddr::V4(ORIGIN_V4)]);
    let aaaa = q(v6, "allowed.test", RecordType::AAAA);
    assert_eq!(aaaa.ips(), vec![IpAddr::V6(ORIGIN_V6)]);
    let tcp = lab
        .dns_query_with(
            Host::Agent,
            v4,
            "other.allowed.test",
            RecordType::A,
            Transport::Tcp,
        )
        .expect("tcp query");
    assert_eq!(tcp.ips(), vec![IpAddr::V4(OTHER_ORIGIN_V4)]);
    let tcp6 = lab
        .dns_query_with(
            Host::Agent,
            v6,
            "denied.test",
            RecordType::A,
            Transport::Tcp,
        )
        .expect("tcp query over v6");
    assert_eq!(tcp6.ips(), vec![IpAddr::V4(ORIGIN_V4)]);

    assert_eq!(
        q(v4, "private.test", RecordType::A).ips(),
        vec![IpAddr::V4(PRIVATE_V4)]
    );
    let cname = q(v4, "cname.test", RecordType::A);
    assert_eq!(cname.cnames(), vec!["allowed.test".to_owned()]);
    assert_eq!(cname.ips(), vec![IpAddr::V4(ORIGIN_V4)]);
    assert_eq!(
        q(v4, "txt.allowed.test", RecordType::TXT).txts(),
        vec!["bottleneck-lab=txt".to_owned()]
    );

    // rebind.test alternates between the origin and loopback, with a short TTL.
    let rebind: Vec<_> = (0..4)
        .map(|_| q(v4, "rebind.test", RecordType::A))
        .collect();
    let ips: Vec<_> = rebind.iter().map(|r| r.ips()).collect();
    let origin = vec![IpAddr::V4(ORIGIN_V4)];
    let local = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    assert_eq!(ips, vec![origin.clone(), local.clone(), origin, local]);
    assert!(rebind.iter().all(|r| r.min_ttl() == Some(1)));

    // Unknown names, in and outside .test, are NXDOMAIN.
    for name in ["nothing.test", "allowed.test.evil", "example.com"] {
        let r = q(v4, name, RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NXDomain, "{name}");
        assert!(r.ips().is_empty());
    }

    // Tests can add records.
    lab.dns()
        .add_a("added.test", Ipv4Addr::new(198, 51, 100, 99))
        .expect("add");
    lab.dns()
        .add_aaaa(
            "added.test",
            Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x99),
        )
        .expect("add");
    assert_eq!(
        q(v6, "ADDED.test", RecordType::A).ips(),
        vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 99))]
    );

    // Counters: total and per name; a name never asked for was never seen.
    assert_eq!(lab.dns().queries(), 15);
    assert_eq!(lab.dns().queries_for("allowed.test"), 2);
    assert_eq!(lab.dns().queries_for("rebind.test"), 4);
    assert_eq!(lab.dns().queries_for("added.test"), 1);
    assert_eq!(lab.dns().queries_for("secret.denied.test"), 0);
    let log = lab.dns().log();
    assert_eq!(log.len(), 15);
    assert!(log.iter().all(
        |r| matches!(r.client.ip(), IpAddr::V4(ip) if ip == addr::AGENT_V4)
            || r.client.ip() == IpAddr::V6(addr::AGENT_V6)
    ));
    assert_eq!(
        log.iter().filter(|r| r.transport == Transport::Tcp).count(),
        2
    );

    // A real client (glibc's resolver through the bind-mounted resolv.conf) agrees.
    let out = lab
        .exec(Host::Agent, &["getent", "ahostsv4", "allowed.test"])
        .expect("getent ran");
    assert!(out.success(), "{out:?}");
    assert!(out.stdout_str().contains("198.51.100.10"), "{out:?}");
    assert!(lab.dns().queries_for("allowed.test") >= 3);

    // Garbage does not hurt the server.
    lab.run_in(Host::Agent, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(&[0xde, 0xad], v4).unwrap();
        s.send_to(&[0xff; 64], v4).unwrap();
    })
    .expect("garbage sent");
    assert_eq!(
        q(v4, "allowed.test", RecordType::A).ips(),
        vec![IpAddr::V4(ORIGIN_V4)]
    );
}

#[test]
fn tcp_and_udp_echo_servers_echo_and_count() {
    if !require_root("tcp_and_udp_echo_servers_echo_and_count") {
        return;
    }
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let targets = [
        SocketAddr::new(IpAddr::V4(ECHO_V4), ECHO_PORT),
        SocketAddr::new(IpAddr::V6(ECHO_V6), ECHO_PORT),
    ];
    lab.run_in(Host::Agent, move || {
        for target in targets {
            let mut tcp = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("tcp {target}: {e}"));
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let payload = vec![b'z'; 100_000];
            tcp.write_all(&payload).unwrap();
            let mut back = vec![0u8; payload.len()];
            tcp.read_exact(&mut back).unwrap();
            assert_eq!(back, payload);

            let local = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let udp = UdpSocket::bind(local).unwrap();
            udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            for msg in [&b"ping"[..], &b"pong!"[..]] {
                udp.send_to(msg, target).unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = udp.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], msg);
                assert_eq!(from, target);
            }
        }
    })
    .expect("echo client ran");
    let echo = lab.echo();
    assert_eq!(echo.tcp_connections(), 2);
    assert_eq!(echo.tcp_bytes(), 200_000);
    assert_eq!(echo.udp_datagrams(), 4);
    assert_eq!(echo.udp_bytes(), 18);

    // A real client too: nc is not guaranteed, bash's /dev/tcp is.
    let out = lab
        .exec(
            Host::Agent,
            &[
                "bash",
                "-c",
                "exec 3<>/dev/tcp/198.51.100.7/7; printf hi >&3; head -c 2 <&3",
            ],
        )
        .expect("bash ran");
    assert_eq!(out.stdout_str(), "hi", "{out:?}");
    assert_eq!(lab.echo().tcp_connections(), 3);
}
