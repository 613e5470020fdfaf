//! Tests of the WAN emulator with real sockets on 127.0.0.1. Timing assertions
//! are lower bounds only (a delayed byte cannot arrive early), every wait is
//! bounded, and "nothing arrives" is checked over a short window, which
//! cannot flake because nothing may cross a cut link at all.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

/// Upper bound for anything that must happen.
const WAIT: Duration = Duration::from_secs(10);
/// Window during which nothing may arrive across a cut.
const QUIET: Duration = Duration::from_millis(300);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A server that optionally greets each connection, echoes everything and
/// reports what it received.
async fn server(greeting: Option<&'static [u8]>) -> (SocketAddr, UnboundedReceiver<Vec<u8>>) {
    let listener = match TcpListener::bind(any_port()).await {
        Ok(l) => l,
        Err(e) => panic!("bind test server: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("test server address: {e}"),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(g) = greeting {
                    if sock.write_all(g).await.is_err() {
                        return;
                    }
                }
                let mut buf = vec![0u8; 8192];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let _ = tx.send(buf[..n].to_vec());
                            if sock.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn link(upstream: SocketAddr, conditions: LinkConditions) -> WanLink {
    let cfg = LinkConfig::new("test", any_port(), &upstream.to_string()).with_conditions(conditions);
    match WanLink::start(cfg).await {
        Ok(l) => l,
        Err(e) => panic!("start link: {e}"),
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    match timeout(WAIT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => panic!("connect {addr}: {e}"),
        Err(_) => panic!("connect {addr} timed out"),
    }
}

async fn write(s: &mut TcpStream, data: &[u8]) {
    match timeout(WAIT, s.write_all(data)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("write: {e}"),
        Err(_) => panic!("write timed out"),
    }
}

/// Reads exactly `n` bytes within `WAIT`.
async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    match timeout(WAIT, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => buf,
        Ok(Err(e)) => panic!("read {n} bytes: {e}"),
        Err(_) => panic!("read {n} bytes timed out"),
    }
}

/// Asserts that nothing can be read during `QUIET`.
async fn assert_silent(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    if let Ok(r) = timeout(QUIET, s.read(&mut buf)).await {
        panic!("expected silence, got {r:?}");
    }
}

/// Asserts the server receives nothing during `QUIET`.
async fn assert_server_silent(rx: &mut UnboundedReceiver<Vec<u8>>) {
    if let Ok(got) = timeout(QUIET, rx.recv()).await {
        panic!("server unexpectedly received {got:?}");
    }
}

async fn server_recv(rx: &mut UnboundedReceiver<Vec<u8>>, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match timeout(WAIT, rx.recv()).await {
            Ok(Some(b)) => got.extend_from_slice(&b),
            Ok(None) => panic!("server gone"),
            Err(_) => panic!("server did not receive {n} bytes (got {})", got.len()),
        }
    }
    got
}

/// The connection is closed or reset within `WAIT` (not hanging, no data).
async fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a closed connection, read {n} bytes"),
        Err(_) => panic!("expected a closed connection, it hangs"),
    }
}

async fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    write(s, msg).await;
    assert_eq!(read_n(s, msg.len()).await, msg);
}

#[tokio::test]
async fn latency_and_jitter_preserve_bytes_and_order() {
    let (up, _rx) = server(None).await;
    let shape = Shape { latency_ms: 40, jitter_ms: 15, ..Shape::default() };
    let l = link(up, LinkConditions::symmetric(shape)).await;
    let mut c = connect(l.local_addr()).await;

    // Lower bound: the echo crosses the link twice, each >= 40 - 15 ms.
    let t0 = Instant::now();
    roundtrip(&mut c, b"ping").await;
    assert!(t0.elapsed() >= Duration::from_millis(50), "{:?}", t0.elapsed());

    // Many writes of varying sizes with jitter: content and order intact.
    let mut rng = StdRng::seed_from_u64(7);
    let mut expected = Vec::new();
    let mut msgs = Vec::new();
    for i in 0..300u32 {
        let len = rng.random_range(1..3000);
        let msg: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
        expected.extend_from_slice(&msg);
        msgs.push(msg);
    }
    let (mut r, mut w) = c.into_split();
    let writer = tokio::spawn(async move {
        for m in msgs {
            if w.write_all(&m).await.is_err() {
                return false;
            }
        }
        true
    });
    let mut got = vec![0u8; expected.len()];
    match timeout(WAIT * 3, r.read_exact(&mut got)).await {
        Ok(Ok(_)) => {}
        other => panic!("bulk read failed: {other:?}"),
    }
    assert!(matches!(timeout(WAIT, writer).await, Ok(Ok(true))));
    assert!(got == expected, "bytes reordered or corrupted");
    let stats = l.stats();
    assert_eq!(stats.bytes_a_to_b, expected.len() as u64 + 4);
    assert_eq!(stats.connections_total, 1);
    assert!(stats.chunks_released >= 1, "released chunks are counted: {stats:?}");
}

#[tokio::test]
async fn cut_both_blackhole_holds_then_heal_delivers() {
    let (up, mut rx) = server(None).await;
    let l = link(up, LinkConditions::default()).await;
    let mut c1 = connect(l.local_addr()).await;
    roundtrip(&mut c1, b"before").await;
    let _ = server_recv(&mut rx, 6).await;

    l.cut(Cut::Both, CutMode::Blackhole);
    write(&mut c1, b"during").await;
    assert_silent(&mut c1).await;
    // A new connection is accepted locally but never reaches upstream.
    let mut c2 = connect(l.local_addr()).await;
    write(&mut c2, b"new").await;
    assert_silent(&mut c2).await;
    assert_server_silent(&mut rx).await;
    assert_eq!(l.conditions().cut, Cut::Both);

    l.heal();
    // Held bytes flow after heal, like TCP retransmissions.
    assert_eq!(read_n(&mut c1, 6).await, b"during");
    assert_eq!(read_n(&mut c2, 3).await, b"new");
    let mut c3 = connect(l.local_addr()).await;
    roundtrip(&mut c3, b"after").await;
}

#[tokio::test]
async fn cut_both_reset_kills_connections_then_heal_works() {
    let (up, _rx) = server(None).await;
    let l = link(up, LinkConditions::default()).await;
    let mut c1 = connect(l.local_addr()).await;
    roundtrip(&mut c1, b"hello").await;

    l.cut(Cut::Both, CutMode::Reset);
    assert_closed(&mut c1).await;
    let mut c2 = connect(l.local_addr()).await;
    assert_closed(&mut c2).await;
    assert!(l.stats().resets >= 2, "{:?}", l.stats());

    l.heal();
    let mut c3 = connect(l.local_addr()).await;
    roundtrip(&mut c3, b"again").await;
}

#[tokio::test]
async fn one_way_cuts_let_the_other_direction_flow() {
    let (up, mut rx) = server(Some(b"hi from b")).await;
    let l = link(up, LinkConditions::default()).await;

    // a -> b blackholed: the greeting (b -> a) still arrives, requests do not.
    l.cut(Cut::AToB, CutMode::Blackhole);
    let mut c = connect(l.local_addr()).await;
    assert_eq!(read_n(&mut c, 9).await, b"hi from b");
    write(&mut c, b"req1").await;
    assert_server_silent(&mut rx).await;

    // Flip: b -> a blackholed. The held request reaches b, the echo does not.
    l.cut(Cut::BToA, CutMode::Blackhole);
    assert_eq!(server_recv(&mut rx, 4).await, b"req1");
    assert_silent(&mut c).await;

    l.heal();
    assert_eq!(read_n(&mut c, 4).await, b"req1");
    roundtrip(&mut c, b"req2").await;
}

#[tokio::test]
async fn one_way_reset_cut_resets_when_data_crosses() {
    let (up, _rx) = server(Some(b"hi")).await;
    let l = link(up, LinkConditions::default()).await;
    let mut c = connect(l.local_addr()).await;
    assert_eq!(read_n(&mut c, 2).await, b"hi");
    l.cut(Cut::AToB, CutMode::Reset);
    write(&mut c, b"x").await;
    assert_closed(&mut c).await;
}

#[tokio::test]
async fn drop_mode_discards_and_poisons_the_connection() {
    let (up, mut rx) = server(None).await;
    let l = link(up, LinkConditions::default()).await;
    let mut c1 = connect(l.local_addr()).await;
    roundtrip(&mut c1, b"ok").await;
    let _ = server_recv(&mut rx, 2).await;

    l.cut(Cut::Both, CutMode::Drop);
    write(&mut c1, b"lost").await;
    assert_server_silent(&mut rx).await;
    l.heal();
    // The stream has a hole, so this direction stays dead.
    write(&mut c1, b"more").await;
    assert_server_silent(&mut rx).await;
    assert!(l.stats().bytes_dropped >= 4);
    // Fresh connections are fine.
    let mut c2 = connect(l.local_addr()).await;
    roundtrip(&mut c2, b"fresh").await;
}

#[tokio::test]
async fn bandwidth_limit_applies() {
    let (up, _rx) = server(None).await;
    // 128 kbit/s = 16 000 bytes/s in each direction.
    let shape = Shape { bandwidth_kbps: 128, ..Shape::default() };
    let l = link(up, LinkConditions::symmetric(shape)).await;
    let c = connect(l.local_addr()).await;
    let data: Vec<u8> = (0..16_000u32).map(|i| (i % 251) as u8).collect();
    let t0 = Instant::now();
    let (mut r, mut w) = c.into_split();
    let send = data.clone();
    let writer = tokio::spawn(async move { w.write_all(&send).await.is_ok() });
    let mut got = vec![0u8; data.len()];
    match timeout(WAIT * 3, r.read_exact(&mut got)).await {
        Ok(Ok(_)) => {}
        other => panic!("read failed: {other:?}"),
    }
    assert!(matches!(timeout(WAIT, writer).await, Ok(Ok(true))));
    assert!(got == data);
    // 16 000 bytes cannot cross a 16 000 B/s link in less than a second.
    assert!(t0.elapsed() >= Duration::from_millis(990), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn reset_probability_one_resets_new_connections() {
    let (up, _rx) = server(None).await;
    let conditions = LinkConditions { reset_probability: 1.0, ..LinkConditions::default() };
    let l = link(up, conditions).await;
    let mut c = connect(l.local_addr()).await;
    assert_closed(&mut c).await;
    l.set_conditions(LinkConditions::default());
    let mut c = connect(l.local_addr()).await;
    roundtrip(&mut c, b"fine").await;
}

#[tokio::test]
async fn closing_the_client_closes_upstream_after_delivery() {
    let (up, mut rx) = server(None).await;
    let l = link(up, LinkConditions::symmetric(Shape { latency_ms: 20, ..Shape::default() })).await;
    let mut c = connect(l.local_addr()).await;
    write(&mut c, b"last words").await;
    let _ = c.shutdown().await;
    // Data sent before the FIN is delivered, and the echo comes back.
    assert_eq!(server_recv(&mut rx, 10).await, b"last words");
    assert_eq!(read_n(&mut c, 10).await, b"last words");
    assert_closed(&mut c).await;
}

#[test]
fn scheduler_pipelines_and_keeps_order() {
    let now = Instant::now();
    let mut s = Scheduler::new(now, StdRng::seed_from_u64(1));
    let shape = Shape { latency_ms: 100, ..Shape::default() };
    // Chunks read together are released together: not one per RTT.
    for _ in 0..10 {
        assert_eq!(s.schedule(now, 1000, &shape), now + Duration::from_millis(100));
    }
    // With jitter, releases never go backwards and never precede latency - jitter.
    let jittery = Shape { latency_ms: 50, jitter_ms: 40, ..Shape::default() };
    let mut s = Scheduler::new(now, StdRng::seed_from_u64(2));
    let mut last = now;
    for i in 0..1000u64 {
        let t = now + Duration::from_micros(i * 100);
        let r = s.schedule(t, 100, &jittery);
        assert!(r >= last);
        assert!(r >= t + Duration::from_millis(10));
        last = r;
    }
    // Bandwidth: 8 kbit/s = 1000 B/s; three 500-byte chunks at once serialize.
    let slow = Shape { bandwidth_kbps: 8, ..Shape::default() };
    let mut s = Scheduler::new(now, StdRng::seed_from_u64(3));
    assert_eq!(s.schedule(now, 500, &slow), now + Duration::from_millis(500));
    assert_eq!(s.schedule(now, 500, &slow), now + Duration::from_millis(1000));
    assert_eq!(s.schedule(now, 500, &slow), now + Duration::from_millis(1500));
    // Loss 1.0 always adds a retransmission stall.
    let lossy = Shape { latency_ms: 10, loss: 1.0, ..Shape::default() };
    let mut s = Scheduler::new(now, StdRng::seed_from_u64(4));
    assert_eq!(s.schedule(now, 1, &lossy), now + Duration::from_millis(210));
}

#[test]
fn updates_validate_serialize_and_reverse() {
    let u: LinkUpdate = match serde_json::from_str(
        r#"{"latency_ms":30,"jitter_ms":5,"bandwidth_kbps":1000,"loss":0.01,"cut":"a_to_b","mode":"blackhole","b_to_a":{"latency_ms":60}}"#,
    ) {
        Ok(u) => u,
        Err(e) => panic!("parse: {e}"),
    };
    assert!(u.validate().is_ok());
    let mut c = LinkConditions::default();
    u.apply(&mut c);
    assert_eq!(c.a_to_b.latency_ms, 30);
    assert_eq!(c.b_to_a.latency_ms, 60);
    assert_eq!(c.b_to_a.jitter_ms, 5);
    assert_eq!(c.cut, Cut::AToB);
    let r = u.reversed();
    assert_eq!(r.cut, Some(Cut::BToA));
    assert_eq!(r.a_to_b.and_then(|s| s.latency_ms), Some(60));
    assert!(LinkUpdate { loss: Some(1.5), ..LinkUpdate::default() }.validate().is_err());
    assert!(LinkUpdate { reset_probability: Some(f64::NAN), ..LinkUpdate::default() }.validate().is_err());
    assert!(serde_json::from_str::<LinkUpdate>(r#"{"latency":3}"#).is_err());
    assert_eq!(serde_json::to_string(&Cut::BToA).ok().as_deref(), Some("\"b_to_a\""));
}

#[test]
fn link_specs_parse() {
    let cfg = match parse_link_spec("e1-c1=127.0.0.1:17001,127.0.0.1:7001,eastus2,centralus") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cfg.name, "e1-c1");
    assert_eq!(cfg.upstream, "127.0.0.1:7001");
    assert_eq!(cfg.a_region.as_deref(), Some("eastus2"));
    assert!(parse_link_spec("x=127.0.0.1:1,localhost:2").is_ok());
    assert!(parse_link_spec("nolisten").is_err());
    assert!(parse_link_spec("x=notanaddr,127.0.0.1:1").is_err());
    assert!(parse_link_spec("x=127.0.0.1:1,127.0.0.1:2,onlyone").is_err());
}

#[test]
fn config_files_parse() {
    let text = r#"
        control = "127.0.0.1:7400"
        [[links]]
        name = "e1-c1"
        listen = "127.0.0.1:17001"
        upstream = "127.0.0.1:7001"
        a_region = "eastus2"
        b_region = "centralus"
        [links.conditions.a_to_b]
        latency_ms = 30
    "#;
    let cfg: WanConfig = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cfg.links.len(), 1);
    assert_eq!(cfg.links[0].conditions.a_to_b.latency_ms, 30);
    assert_eq!(cfg.links[0].conditions.cut, Cut::None);
}

#[tokio::test]
async fn controller_region_pairs_and_http_control_api() {
    let (up_c, mut rx_c) = server(None).await;
    let (up_e, _rx_e) = server(None).await;
    let ctl = WanController::new();
    let e2c = LinkConfig::new("e2c", any_port(), &up_c.to_string()).between("eastus2", "centralus");
    let c2e = LinkConfig::new("c2e", any_port(), &up_e.to_string()).between("centralus", "eastus2");
    let (Ok(e2c), Ok(_c2e)) = (ctl.add_link(e2c).await, ctl.add_link(c2e).await) else {
        panic!("add links");
    };
    assert!(matches!(
        ctl.add_link(LinkConfig::new("e2c", any_port(), "127.0.0.1:1")).await,
        Err(WanError::DuplicateLink(_))
    ));
    let server = match ctl.serve_control(any_port()).await {
        Ok(s) => s,
        Err(e) => panic!("control server: {e}"),
    };
    let client = match WanControlClient::new(&server.url()) {
        Ok(c) => c,
        Err(e) => panic!("client: {e}"),
    };

    // One-way partition eastus2 -> centralus plus latency, in one request.
    let update = LinkUpdate { latency_ms: Some(30), ..LinkUpdate::cut(Cut::AToB, CutMode::Blackhole) };
    let changed = match timeout(WAIT, client.update_regions("eastus2", "centralus", &update)).await {
        Ok(Ok(v)) => v,
        other => panic!("update regions: {other:?}"),
    };
    assert_eq!(changed.len(), 2);
    let links = match timeout(WAIT, client.links()).await {
        Ok(Ok(v)) => v,
        other => panic!("list: {other:?}"),
    };
    let by_name: BTreeMap<_, _> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    assert_eq!(by_name["e2c"].conditions.cut, Cut::AToB);
    assert_eq!(by_name["c2e"].conditions.cut, Cut::BToA);
    assert_eq!(by_name["c2e"].conditions.b_to_a.latency_ms, 30);

    // Traffic from eastus2 to centralus is blackholed.
    let mut c = connect(e2c.local_addr()).await;
    write(&mut c, b"raft append").await;
    assert_server_silent(&mut rx_c).await;

    // Errors: bad values, unknown links and regions.
    let bad = LinkUpdate { loss: Some(2.0), ..LinkUpdate::default() };
    let err = timeout(WAIT, client.update_link("e2c", &bad)).await;
    assert!(matches!(&err, Ok(Err(WanError::Control(m))) if m.starts_with("400")), "{err:?}");
    let err = timeout(WAIT, client.update_link("nope", &LinkUpdate::heal())).await;
    assert!(matches!(&err, Ok(Err(WanError::Control(m))) if m.starts_with("404")), "{err:?}");
    let err = timeout(WAIT, client.update_regions("eastus2", "westus", &update)).await;
    assert!(matches!(&err, Ok(Err(WanError::Control(m))) if m.starts_with("404")), "{err:?}");
    // A malformed body is a 400, not a crash.
    let raw = reqwest::Client::new().post(format!("{}/links/e2c", server.url())).body("{not json").send();
    match timeout(WAIT, raw).await {
        Ok(Ok(r)) => assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST),
        other => panic!("raw request: {other:?}"),
    }

    // Heal over HTTP: the held bytes reach centralus, conditions are clean.
    let healed = match timeout(WAIT, client.heal_all()).await {
        Ok(Ok(v)) => v,
        other => panic!("heal: {other:?}"),
    };
    assert!(healed.iter().all(|l| l.conditions.cut == Cut::None));
    assert_eq!(server_recv(&mut rx_c, 11).await, b"raft append");
    assert_eq!(read_n(&mut c, 11).await, b"raft append");

    // In-process helpers.
    assert_eq!(ctl.partition("centralus", "eastus2", false, CutMode::Reset).ok(), Some(2));
    assert!(ctl.links().iter().all(|l| l.conditions.cut == Cut::Both));
    ctl.heal_all();
    assert!(ctl.remove_link("c2e"));
    assert!(ctl.link("c2e").is_none());
    server.shutdown().await;
}

#[test]
fn the_connect_timeout_flag_reaches_every_link() {
    let spec = |s: &str| parse_link_spec(s).unwrap_or_else(|e| panic!("{e}"));
    let args = WanProxyArgs {
        links: vec![spec("a=127.0.0.1:0,127.0.0.1:9"), spec("b=127.0.0.1:0,node-b1:7443,eastus2,centralus")],
        config: None,
        control: SocketAddr::from(([127, 0, 0, 1], 0)),
        latency_ms: 10,
        jitter_ms: 0,
        bandwidth_kbps: 0,
        loss: 0.0,
        connect_timeout_ms: Some(1000),
    };
    let config = args.to_config().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.links.len(), 2);
    assert!(config.links.iter().all(|l| l.connect_timeout_ms == Some(1000)), "{:?}", config.links);
    // Without the flag a link keeps the default.
    let config = WanProxyArgs { connect_timeout_ms: None, ..args }.to_config().unwrap_or_else(|e| panic!("{e}"));
    assert!(config.links.iter().all(|l| l.connect_timeout_ms.is_none()));
}
