//! One member's stream read straight from the log, with nothing else in the process: how much of
//! a member history's latency is the log's own (chunk reads), and how much the read models add.
//!
//! cargo run --release -p flowbook-projections --example history_probe -- D [--cache-mib 64]
//!
//! Takes the member streams of 10,000 events from the middle of the log and reads 3,000 of them
//! whole; prints p50 / p99. Run it twice: the first run shows a cold page cache, the second a warm one.

use flowbook_store::{Store, StoreOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: history_probe DIR [--cache-mib N]");
    let cache_mib: u64 = match (args.next().as_deref(), args.next()) {
        (Some("--cache-mib"), Some(value)) => value.parse().expect("--cache-mib N"),
        _ => 64,
    };
    let options = StoreOptions { cache_capacity_bytes: cache_mib << 20, ..StoreOptions::default() };
    let store = Store::open(&dir, options).expect("open the store");
    let middle = store.head() / 2;
    let streams: Vec<String> = store
        .read_log(middle, 10_000)
        .expect("read the log")
        .into_iter()
        .map(|event| event.stream)
        .filter(|stream| stream.starts_with("member/"))
        .take(3_000)
        .collect();
    assert!(!streams.is_empty(), "no member streams in the middle of the log");
    let mut events = 0;
    let mut millis: Vec<f64> = streams
        .iter()
        .map(|stream| {
            let started = std::time::Instant::now();
            events += store.read_stream(stream, 1, 1_000).expect("read a stream").len();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    millis.sort_by(f64::total_cmp);
    let at = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
    println!("{} streams, {events} events: p50 {:.3} ms, p99 {:.3} ms", millis.len(), at(0.5), at(0.99));
}
