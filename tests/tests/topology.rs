//! The lab's topology carries real clients: curl in the agent reaches the wan origins
//! through a routing gateway, as root and as an unprivileged user; a bare gateway
//! forwards nothing; two labs side by side do not see each other.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use std::net::IpAddr;

use bottleneck_lab::addr::{
    AGENT_V4, AGENT_V6, GATEWAY_WAN_V4, GATEWAY_WAN_V6, HTTP_ORIGIN_V4, HTTP_ORIGIN_V6, ORIGIN_V4,
    ORIGIN_V6, OTHER_ORIGIN_V4, OTHER_ORIGIN_V6,
};
use bottleneck_lab::{GatewayMode, Host, Lab, RequestRecord, require_root};

/// `curl` with the lab CA, failing on HTTP errors, printing the body.
fn curl(lab: &Lab, extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "10",
        "--cacert",
        lab.ca_pem_path().to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

fn echo_of(out: &bottleneck_lab::ExecOutput) -> RequestRecord {
    assert!(out.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not an echo ({e}): {out:?}"))
}

#[test]
fn curl_in_agent_reaches_https_origin_through_router_gateway() {
    if !require_root("curl_in_agent_reaches_https_origin_through_router_gateway") {
        return;
    }
    let started = Instant::now();
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    eprintln!("lab built in {:?}", started.elapsed());

    // IPv4, HTTP/1.1, name resolved through the lab DNS via the bind-mounted resolv.conf.
    let out = lab
        .exec(
            Host::Agent,
            &curl(
                &lab,
                &[
                    "-4",
                    "--http1.1",
                    "-H",
                    "x-lab: one",
                    "https://allowed.test/echo?q=1",
                ],
            ),
        )
        .expect("curl ran");
    let echo = echo_of(&out);
    assert_eq!(echo.scheme, "https");
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/echo?q=1");
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.sni.as_deref(), Some("allowed.test"));
    assert_eq!(echo.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(echo.authority.as_deref(), Some("allowed.test"));
    assert_eq!(echo.header("x-lab"), Some("one"));
    assert_eq!(echo.local_addr, format!("{ORIGIN_V4}:443"));
    // Routed, not NATed: the origin sees the agent's own address.
    assert!(
        echo.peer_addr.starts_with(&format!("{AGENT_V4}:")),
        "{}",
        echo.peer_addr
    );
    assert_eq!(lab.https().requests(), 1);
    assert_eq!(lab.https().last().as_ref(), Some(&echo));
    assert!(lab.dns().queries_for("allowed.test") >= 1);

    // IPv6 and HTTP/2 with a POST body.
    let out = lab
        .exec(
            Host::Agent,
            &curl(
                &lab,
                &[
                    "-6",
                    "--http2",
                    "--data-raw",
                    "hello v6",
                    "https://allowed.test/echo",
                ],
            ),
        )
        .expect("curl ran");
    let echo = echo_of(&out);
    assert_eq!(echo.version, "HTTP/2.0");
    assert_eq!(echo.alpn.as_deref(), Some("h2"));
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.body, "hello v6");
    assert_eq!(echo.body_len, 8);
    assert_eq!(echo.local_addr, format!("[{ORIGIN_V6}]:443"));
    assert!(
        echo.peer_addr.starts_with(&format!("[{AGENT_V6}]:")),
        "{}",
        echo.peer_addr
    );
    assert_eq!(lab.https().requests(), 2);

    // A name in the other public range, through the CNAME, and bulk bytes.
    let out = lab
        .exec(Host::Agent, &curl(&lab, &["https://other.allowed.test/x"]))
        .expect("curl ran");
    let local = echo_of(&out).local().expect("local addr");
    assert!(
        [IpAddr::V4(OTHER_ORIGIN_V4), IpAddr::V6(OTHER_ORIGIN_V6)].contains(&local.ip()),
        "{local}"
    );
    let out = lab
        .exec(Host::Agent, &curl(&lab, &["https://cname.test/"]))
        .expect("curl ran");
    assert_eq!(echo_of(&out).sni.as_deref(), Some("cname.test"));
    let out = lab
        .exec(
            Host::Agent,
            &curl(
                &lab,
                &[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download}",
                    "https://allowed.test/bytes/3000000",
                ],
            ),
        )
        .expect("curl ran");
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_str(), "3000000");

    // Plain HTTP reaches the port-80 origin.
    let out = lab
        .exec(Host::Agent, &curl(&lab, &["http://http.test/plain"]))
        .expect("curl ran");
    let echo = echo_of(&out);
    assert_eq!(echo.scheme, "http");
    assert_eq!(echo.sni, None);
    let local = echo.local().expect("local addr");
    assert_eq!(local.port(), 80);
    assert!(
        [IpAddr::V4(HTTP_ORIGIN_V4), IpAddr::V6(HTTP_ORIGIN_V6)].contains(&local.ip()),
        "{local}"
    );
    assert_eq!(lab.http().requests(), 1);
    assert_eq!(lab.https().requests(), 5);
    eprintln!("test done in {:?}", started.elapsed());
}

#[test]
fn curl_as_unprivileged_user_in_agent_works() {
    if !require_root("curl_as_unprivileged_user_in_agent_works") {
        return;
    }
    let lab = Lab::new(GatewayMode::Router).expect("lab");
    let out = lab
        .command(Host::Agent, &["id", "-u"])
        .user(65534, 65534)
        .run()
        .expect("id ran");
    assert_eq!(out.stdout_str().trim(), "65534", "{out:?}");

    let out = lab
        .command(Host::Agent, &curl(&lab, &["https://allowed.test/echo"]))
        .user(65534, 65534)
        .env("LAB_MARK", "nobody")
        .run()
        .expect("curl ran");
    let echo = echo_of(&out);
    assert_eq!(echo.sni.as_deref(), Some("allowed.test"));
    assert_eq!(lab.https().requests(), 1);

    // The environment is clean apart from what the test set.
    let out = lab
        .command(
            Host::Agent,
            &["sh", "-c", "echo \"$LAB_MARK|${http_proxy-unset}|$HOME\""],
        )
        .user(65534, 65534)
        .env("LAB_MARK", "nobody")
        .run()
        .expect("sh ran");
    assert_eq!(
        out.stdout_str().trim(),
        format!("nobody|unset|{}", lab.home().display())
    );
}

#[test]
fn bare_gateway_does_not_forward() {
    if !require_root("bare_gateway_does_not_forward") {
        return;
    }
    let lab = Lab::new(GatewayMode::Bare).expect("lab");
    let forwarding = lab
        .exec(
            Host::Gateway,
            &[
                "sysctl",
                "-n",
                "net.ipv4.ip_forward",
                "net.ipv6.conf.all.forwarding",
            ],
        )
        .expect("sysctl ran");
    assert_eq!(forwarding.stdout_str(), "0\n0\n", "{forwarding:?}");

    // By address (no DNS involved) in both families, and by name (the lab DNS is on
    // the other side too); run side by side since each waits out its --max-time.
    let ca = lab.ca_pem_path().to_str().expect("utf-8").to_owned();
    let attempts: Vec<Vec<String>> = [
        ("-4", format!("allowed.test:443:{ORIGIN_V4}")),
        ("-6", format!("allowed.test:443:[{ORIGIN_V6}]")),
        ("-4", "unused.test:443:198.51.100.10".to_owned()),
    ]
    .into_iter()
    .map(|(family, resolve)| {
        [
            "curl",
            "-sS",
            family,
            "--max-time",
            "3",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "https://allowed.test/echo",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    })
    .collect();
    std::thread::scope(|s| {
        for argv in &attempts {
            let lab = &lab;
            s.spawn(move || {
                let out = lab.exec(Host::Agent, argv).expect("curl ran");
                assert!(!out.success(), "a bare gateway forwarded: {out:?}");
            });
        }
    });
    assert_eq!(lab.https().requests(), 0);
    assert_eq!(lab.https().connections(), 0);
    assert_eq!(lab.dns().queries(), 0);

    // The gateway itself does reach the wan: the base a gateway process will use.
    let out = lab
        .exec(Host::Gateway, &curl(&lab, &["https://allowed.test/echo"]))
        .expect("curl ran");
    let echo = echo_of(&out);
    let peer = echo.peer().expect("peer addr").ip();
    assert!(
        [IpAddr::V4(GATEWAY_WAN_V4), IpAddr::V6(GATEWAY_WAN_V6)].contains(&peer),
        "{peer}"
    );
    assert_eq!(lab.https().requests(), 1);
}

#[test]
fn parallel_labs_do_not_collide() {
    if !require_root("parallel_labs_do_not_collide") {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lab::new(GatewayMode::Router).expect("lab a"));
        let b = s.spawn(|| Lab::new(GatewayMode::Router).expect("lab b"));
        (
            a.join().expect("lab a thread"),
            b.join().expect("lab b thread"),
        )
    });
    for (x, y) in a.namespaces().iter().zip(b.namespaces()) {
        assert_ne!(x, y);
    }
    std::thread::scope(|s| {
        for lab in [&a, &b] {
            s.spawn(move || {
                for _ in 0..3 {
                    let out = lab
                        .exec(Host::Agent, &curl(lab, &["https://allowed.test/echo"]))
                        .expect("curl ran");
                    echo_of(&out);
                }
            });
        }
    });
    assert_eq!(a.https().requests(), 3);
    assert_eq!(b.https().requests(), 3);

    // Each lab has its own CA: lab b's origin is not trusted with lab a's CA.
    let out = b
        .exec(
            Host::Agent,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                a.ca_pem_path().to_str().expect("utf-8"),
                "https://allowed.test/echo",
            ],
        )
        .expect("curl ran");
    assert_eq!(out.code(), Some(60), "{out:?}");
}
