//! Arbitrary bytes as a DNS query from the agent, through the real handler with a gate that
//! denies every name: it must never panic, always answer something a client can parse
//! (or nothing, for input without a header), and never answer with records, because a
//! denied name is answered locally and nothing else is pinned.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bottleneck_dns::gate::NoLog;
use bottleneck_dns::{AllowlistHandler, DnsConfig, GateDecision, Pins, Resolver};
use hickory_proto::op::Message;
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use libfuzzer_sys::fuzz_target;

/// Keeps the encoded response.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap() = Some(bytes);
        Ok(info)
    }
}

struct World {
    runtime: tokio::runtime::Runtime,
    handler: AllowlistHandler,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = DnsConfig {
            // Never asked: every name is denied. Port 9 on loopback, in case it were.
            upstreams: vec!["127.0.0.1:9".parse().unwrap()],
            ..DnsConfig::default()
        };
        let gate = |_: &str| GateDecision {
            allowed: false,
            reason: "fuzz_denies_everything",
        };
        let resolver = {
            let _guard = runtime.enter();
            Arc::new(Resolver::new(&config, Arc::new(gate)).unwrap())
        };
        let handler =
            AllowlistHandler::new(&config, resolver, Arc::new(NoLog), Arc::new(Pins::new(16)));
        World { runtime, handler }
    })
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let src: SocketAddr = "198.18.0.2:5353".parse().unwrap();
    let Ok(request) = Request::from_bytes(data.to_vec(), src, Protocol::Udp) else {
        return;
    };
    let capture = Capture::default();
    world.runtime.block_on(
        world
            .handler
            .handle_request::<_, TokioTime>(&request, capture.clone()),
    );
    let bytes = capture
        .0
        .lock()
        .unwrap()
        .take()
        .expect("every parsed query is answered");
    let reply = Message::from_vec(&bytes).expect("the response parses");
    assert_eq!(reply.metadata.id, request.metadata.id);
    assert!(
        reply.answers.is_empty(),
        "a denied name got answers: {reply:?}"
    );
    assert!(bytes.len() <= 65_535);
});
