//! A one-container simulated internet for the spikes (`spikes/`): authoritative DNS for
//! the names given (all answering this container's address), an HTTPS origin signed by a
//! test CA (its certificate written to `--ca-out`), and plain HTTP. Every request is
//! logged on stdout (`wan: https allowed.test GET /x authorization=yes`), so
//! `podman logs` shows what reached "the internet". Runs inside a container on a
//! network the spike created; binds only the address given.
//!
//! ```text
//! wan --ip 203.0.113.10 --names allowed.test,denied.test --ca-out /out/wan-ca.pem
//! ```
#![cfg_attr(not(target_os = "linux"), allow(unused))]
// A spike helper: a failed start is reported by the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("wan: Linux only");
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;

    use bottleneck_lab::{DnsServer, TestCa};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn arg(name: &str) -> Option<String> {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    }

    pub fn main() {
        let ip: Ipv4Addr = arg("--ip")
            .expect("--ip ADDRESS")
            .parse()
            .expect("an IPv4 address");
        let names: Vec<String> = arg("--names")
            .unwrap_or_else(|| "allowed.test".into())
            .split(',')
            .map(str::to_owned)
            .collect();
        let ca_out = arg("--ca-out").expect("--ca-out FILE");
        let dns = DnsServer::default();
        for n in &names {
            dns.add_a(n, ip).unwrap();
        }
        let ca = TestCa::new("bottleneck-spike-wan").unwrap();
        std::fs::write(&ca_out, ca.cert_pem()).unwrap();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let leaf = ca.issue(&refs).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der.clone()], leaf.key_der.clone_key().into())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let udp = tokio::net::UdpSocket::bind(SocketAddr::from((ip, 53)))
                .await
                .unwrap();
            let tcp = tokio::net::TcpListener::bind(SocketAddr::from((ip, 53)))
                .await
                .unwrap();
            tokio::spawn(bottleneck_lab::dns::serve_udp(dns.clone(), udp));
            tokio::spawn(bottleneck_lab::dns::serve_tcp(dns, tcp));
            let http = tokio::net::TcpListener::bind(SocketAddr::from((ip, 80)))
                .await
                .unwrap();
            tokio::spawn(async move {
                while let Ok((conn, _)) = http.accept().await {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), serve("http", conn))
                            .await;
                    });
                }
            });
            let https = tokio::net::TcpListener::bind(SocketAddr::from((ip, 443)))
                .await
                .unwrap();
            println!(
                "wan: serving DNS, HTTP and HTTPS on {ip} for {}",
                names.join(", ")
            );
            while let Ok((conn, _)) = https.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), async move {
                        match acceptor.accept(conn).await {
                            Ok(tls) => serve("https", tls).await,
                            Err(e) => {
                                println!("wan: https handshake failed: {e}");
                                Ok(())
                            }
                        }
                    })
                    .await;
                });
            }
        });
    }

    async fn serve<S>(scheme: &str, mut conn: S) -> std::io::Result<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let mut lines = text.split("\r\n");
        let request = lines.next().unwrap_or("").to_owned();
        let mut host = String::new();
        let mut auth = "no";
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "host" => host = v.trim().to_owned(),
                    "authorization" => auth = "yes",
                    _ => {}
                }
            }
        }
        let mut words = request.split(' ');
        let method = words.next().unwrap_or("");
        let path = words.next().unwrap_or("");
        println!("wan: {scheme} {host} {method} {path} authorization={auth}");
        let body = format!("origin saw {scheme}://{host}{path} (authorization: {auth})\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(response.as_bytes()).await?;
        conn.shutdown().await
    }
}
