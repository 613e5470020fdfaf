//! AppendEntries over one long-lived gRPC stream per peer.
//!
//! Why: every AppendEntries (openraft's, and each of the shipper's) was a
//! unary call, an HTTP/2 stream of its own: request and response headers
//! (HPACK-encoded and decoded), trailers, a stream opened and closed in h2
//! on both ends, and a request task spawned by the server. At one client
//! a write costs four shipments plus openraft's requests, and that
//! per-call work was a large share of the nodes' CPU (BENCHMARKS.md). On
//! `Raft.AppendStream` a request is one DATA frame each way.
//!
//! Client side ([`AppendStreams`], held by `network::Channels`): one lane
//! per peer address, opened on first use and again after it fails. A
//! request gets a sequence number, waits for the answer carrying it, and
//! gives up at its own deadline (the stream lives on). When the stream
//! fails or the peer ends it, every request still waiting on it gets that
//! status, like a failed unary call (a refusal of our epoch, for one,
//! arrives as the stream's status with the peer's epoch record in its
//! metadata). A peer built before `AppendStream` answers `Unimplemented`:
//! its address is remembered and served unary from then on (until this
//! node restarts, which a rolling upgrade does anyway).
//!
//! Server side ([`serve`]): the requests of a stream are handed to Raft in
//! arrival order and handled concurrently (a follower answers a request
//! once its entries are on disk, and need not wait for that to take the
//! next one), at most [`MAX_CONCURRENT`] at a time; each answer leaves as
//! soon as it is ready, so a slow request holds back no other's answer,
//! as with separate calls. A request that fails (refused epoch,
//! undecodable) ends the stream with its status; so does the node's
//! shutdown (`Unavailable`): a stream never ends on its own, and the gRPC
//! server's graceful stop waits for every stream to end.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attest_proto::RaftMessage;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::network::Channels;

/// Requests queued for sending on one lane, and answers queued on the
/// server's side of a stream.
const QUEUE: usize = 64;
/// Requests of one stream a server handles at once (the shipper keeps at
/// most four per peer in flight, openraft one).
pub const MAX_CONCURRENT: usize = 16;

type Answer = oneshot::Sender<Result<RaftMessage, Status>>;

#[derive(Default)]
struct Waiting {
    answers: HashMap<u64, Answer>,
    /// Set once the stream ended: no request may wait on it any more.
    closed: bool,
}

/// One open stream to a peer.
struct Lane {
    requests: mpsc::Sender<RaftMessage>,
    waiting: Mutex<Waiting>,
    next_seq: AtomicU64,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Registers a request; `None` when the lane has closed meanwhile.
    fn expect(&self) -> Option<(u64, oneshot::Receiver<Result<RaftMessage, Status>>)> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut w = self.lock();
        if w.closed {
            return None;
        }
        w.answers.insert(seq, tx);
        Some((seq, rx))
    }

    fn forget(&self, seq: u64) {
        self.lock().answers.remove(&seq);
    }

    fn answer(&self, msg: RaftMessage) {
        // An answer nobody waits for any more (its request timed out) is dropped.
        if let Some(tx) = self.lock().answers.remove(&msg.seq) {
            let _ = tx.send(Ok(msg));
        }
    }

    /// The stream ended with `status`: every request still waiting gets it.
    fn close(&self, status: Status) {
        let answers = {
            let mut w = self.lock();
            w.closed = true;
            std::mem::take(&mut w.answers)
        };
        for (_, tx) in answers {
            let _ = tx.send(Err(status.clone()));
        }
    }
}

/// The client side: a lane per peer address.
#[derive(Default)]
pub struct AppendStreams {
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    /// Peers that do not know `AppendStream` (older builds): unary calls.
    unary_only: Mutex<HashSet<String>>,
}

impl AppendStreams {
    /// Whether requests to `addr` go on a stream.
    pub fn streams_to(&self, addr: &str) -> bool {
        !self.unary_only.lock().unwrap_or_else(|p| p.into_inner()).contains(addr)
    }

    /// `addr` answered `Unimplemented`: from now on it gets unary calls.
    pub fn unary_from_now(&self, addr: &str) {
        tracing::info!(peer_addr = addr, "peer does not serve Raft.AppendStream; AppendEntries go unary");
        self.unary_only.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string());
    }

    /// Sends `msg` on the stream to `addr` and waits for its answer, at
    /// most `timeout`. A stream that closed before the request went out is
    /// replaced once.
    pub async fn call(
        &self,
        channels: &Channels,
        addr: &str,
        mut msg: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, Status> {
        let deadline = Instant::now() + timeout;
        for _ in 0..2 {
            let lane = self.lane(channels, addr)?;
            let Some((seq, answer)) = lane.expect() else { continue };
            msg.seq = seq;
            match timeout_at(deadline, lane.requests.send(msg)).await {
                Ok(Ok(())) => {}
                // The lane's stream ended before taking it: nothing was sent.
                Ok(Err(mpsc::error::SendError(back))) => {
                    lane.forget(seq);
                    msg = back;
                    continue;
                }
                Err(_) => {
                    lane.forget(seq);
                    return Err(Status::deadline_exceeded("the append stream took no request within the deadline"));
                }
            }
            return match timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(Status::unavailable("the append stream closed")),
                Err(_) => {
                    lane.forget(seq);
                    Err(Status::deadline_exceeded("no answer on the append stream within the deadline"))
                }
            };
        }
        Err(Status::unavailable("the append stream to the peer kept closing"))
    }

    /// The open lane to `addr`, or a new one.
    fn lane(&self, channels: &Channels, addr: &str) -> Result<Arc<Lane>, Status> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lane) = lanes.get(addr).filter(|l| !l.is_closed()) {
            return Ok(lane.clone());
        }
        let mut client = channels.raft_client(addr).map_err(|e| Status::unavailable(e.to_string()))?;
        let (requests, outgoing) = mpsc::channel(QUEUE);
        let lane = Arc::new(Lane { requests, waiting: Mutex::default(), next_seq: AtomicU64::new(0) });
        lanes.insert(addr.to_string(), lane.clone());
        metrics::counter!("attest_raft_append_streams_opened_total", "peer_addr" => addr.to_string()).increment(1);
        let reader = lane.clone();
        tokio::spawn(async move {
            // The request stream flows as soon as the call starts; the
            // answers once the peer has accepted the stream.
            let status = match client.append_stream(ReceiverStream::new(outgoing)).await {
                Ok(response) => {
                    let mut answers = response.into_inner();
                    loop {
                        match answers.message().await {
                            Ok(Some(msg)) => reader.answer(msg),
                            Ok(None) => break Status::unavailable("the peer ended the append stream"),
                            Err(status) => break status,
                        }
                    }
                }
                Err(status) => status,
            };
            reader.close(status);
        });
        Ok(lane)
    }
}

/// Serves one stream: `handle` answers one request (a `Status` ends the
/// stream). Answers carry their request's sequence number. The stream ends
/// with `Unavailable` once `stop` completes.
pub fn serve<H, F, S>(
    mut requests: Streaming<RaftMessage>,
    handle: H,
    stop: S,
) -> ReceiverStream<Result<RaftMessage, Status>>
where
    H: Fn(RaftMessage) -> F + Send + 'static,
    F: Future<Output = Result<RaftMessage, Status>> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let (answers, out) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        tokio::pin!(stop);
        // Handed to Raft in arrival order: a pushed future is first polled
        // in push order, and `handle`'s future gives the request to Raft on
        // its first poll.
        let mut working = FuturesUnordered::new();
        let mut open = true;
        while open || !working.is_empty() {
            tokio::select! {
                next = requests.message(), if open && working.len() < MAX_CONCURRENT => match next {
                    Ok(Some(msg)) => {
                        let seq = msg.seq;
                        let answer = handle(msg);
                        working.push(async move {
                            answer.await.map(|mut reply| {
                                reply.seq = seq;
                                reply
                            })
                        });
                    }
                    // The peer closed its side (or the stream broke): finish
                    // what was taken, then end.
                    Ok(None) | Err(_) => open = false,
                },
                Some(result) = working.next() => {
                    let failed = result.is_err();
                    if answers.send(result).await.is_err() || failed {
                        return;
                    }
                }
                () = &mut stop => {
                    let _ = answers.send(Err(Status::unavailable("the node is shutting down"))).await;
                    return;
                }
                else => return,
            }
        }
    });
    ReceiverStream::new(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use attest_proto::raft_server::{Raft as RaftRpc, RaftServer};
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response};

    use super::*;
    use crate::epoch::{epoch_from_status, stale_epoch_status, EpochRecord};

    /// A peer whose answer to a request depends on its payload: `echo` is
    /// answered at once, `slow` after a minute, `refuse` with the refusal
    /// of a stale epoch. `streams: false` is a build before AppendStream.
    #[derive(Clone)]
    struct Peer {
        streams: bool,
    }

    async fn answer(msg: RaftMessage) -> Result<RaftMessage, Status> {
        match msg.payload.as_slice() {
            b"slow" => tokio::time::sleep(Duration::from_secs(60)).await,
            b"refuse" => return Err(stale_epoch_status(&EpochRecord { epoch: 7, ..Default::default() }, 1, false)),
            _ => {}
        }
        Ok(RaftMessage { payload: msg.payload, epoch: 1, seq: 0 })
    }

    #[tonic::async_trait]
    impl RaftRpc for Peer {
        async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            answer(req.into_inner()).await.map(Response::new)
        }

        type AppendStreamStream = ReceiverStream<Result<RaftMessage, Status>>;

        async fn append_stream(
            &self,
            req: Request<Streaming<RaftMessage>>,
        ) -> Result<Response<Self::AppendStreamStream>, Status> {
            if !self.streams {
                return Err(Status::unimplemented("built before AppendStream"));
            }
            Ok(Response::new(serve(req.into_inner(), answer, std::future::pending())))
        }

        async fn vote(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn install_snapshot(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    async fn start(peer: Peer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServer::new(peer))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }

    fn channels() -> Channels {
        Channels::new(None, Duration::from_secs(5), Default::default())
    }

    fn msg(payload: &[u8]) -> RaftMessage {
        RaftMessage { payload: payload.to_vec(), epoch: 1, seq: 0 }
    }

    const LONG: Duration = Duration::from_secs(20);

    /// The payload `addr` answered `payload` with, if it answered.
    async fn echoed(ch: &Channels, addr: &str, payload: &[u8]) -> Option<Vec<u8>> {
        ch.append_entries(addr, msg(payload), LONG).await.map(|m| m.payload).ok()
    }

    #[tokio::test]
    async fn each_request_gets_its_own_answer_and_a_slow_one_holds_back_no_other() {
        let addr = start(Peer { streams: true }).await;
        let ch = channels();
        let slow = ch.append_entries(&addr, msg(b"slow"), Duration::from_millis(300));
        let quick = async {
            let mut got = Vec::new();
            for i in 0..20u8 {
                // Answered long before the slow request's minute is up, so
                // not queued behind it.
                got.push(ch.append_entries(&addr, msg(&[b'q', i]), LONG).await.map(|m| m.payload));
            }
            got
        };
        let (slow, quick) = tokio::join!(slow, quick);
        let want: Vec<Result<Vec<u8>, Status>> = (0..20u8).map(|i| Ok(vec![b'q', i])).collect();
        assert_eq!(format!("{quick:?}"), format!("{want:?}"));
        assert_eq!(slow.map(|m| m.payload).map_err(|s| s.code()), Err(tonic::Code::DeadlineExceeded));
        // The lane outlived the request that gave up.
        assert_eq!(echoed(&ch, &addr, b"after").await, Some(b"after".to_vec()));
    }

    #[tokio::test]
    async fn a_refusal_reaches_every_waiting_request_with_its_metadata_and_a_new_stream_follows() {
        let addr = start(Peer { streams: true }).await;
        let ch = channels();
        // `join!` polls in order: the slow request is on the stream first.
        let (waiting, refused) =
            tokio::join!(ch.append_entries(&addr, msg(b"slow"), LONG), ch.append_entries(&addr, msg(b"refuse"), LONG));
        for status in [waiting.expect_err("ended with the stream"), refused.expect_err("refused")] {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
            assert_eq!(epoch_from_status(&status).map(|r| r.epoch), Some(7), "the epoch record travels: {status:?}");
        }
        assert_eq!(echoed(&ch, &addr, b"again").await, Some(b"again".to_vec()));
    }

    #[tokio::test]
    async fn a_peer_without_streams_is_sent_unary_calls_after_its_first_refusal() {
        let addr = start(Peer { streams: false }).await;
        let ch = channels();
        let first = ch.append_entries(&addr, msg(b"one"), LONG).await;
        assert_eq!(first.map_err(|s| s.code()).err(), Some(tonic::Code::Unimplemented));
        assert_eq!(echoed(&ch, &addr, b"two").await, Some(b"two".to_vec()));
        // Streams off: unary from the start.
        let ch = channels().stream_appends(false);
        assert_eq!(echoed(&ch, &addr, b"one").await, Some(b"one".to_vec()));
    }
}
