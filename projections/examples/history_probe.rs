//! Member streams read straight from the log, with nothing else in the process: how much of a
//! member history's latency is the log's own (chunk reads), and how much the read models add.
//!
//! cargo run --release -p flowbook-projections --example history_probe -- D [D2 …] [--cache-mib 64]
//!
//! Takes the member streams of 10,000 events from the middle of the first log and reads 3,000 of
//! them whole; prints p50 / p99. Given several logs of the same story (say, one written before a
//! layout change and one after), it reads each stream from each log in turn, so that the machine's
//! drift (±30 % here) falls on all of them alike. Run it twice: the first run shows a cold page
//! cache, the second a warm one. With `PROBE_LENGTHS=1` it also prints the first log's mean and
//! worst time by stream length (is a slow history a long one, or a stall?).

use flowbook_store::{Store, StoreOptions};

/// The allocator the `flowbook` binary uses (see the workspace's Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut dirs: Vec<String> = Vec::new();
    let mut cache_mib: u64 = 64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cache-mib" => cache_mib = args.next().and_then(|v| v.parse().ok()).expect("--cache-mib N"),
            _ => dirs.push(arg),
        }
    }
    assert!(!dirs.is_empty(), "usage: history_probe DIR [DIR …] [--cache-mib N]");
    let options = StoreOptions { cache_capacity_bytes: cache_mib << 20, ..StoreOptions::default() };
    let stores: Vec<Store> =
        dirs.iter().map(|dir| Store::open(dir, options.clone()).expect("open the store")).collect();
    let middle = stores[0].head() / 2;
    let streams: Vec<String> = stores[0]
        .read_log(middle, 10_000)
        .expect("read the log")
        .into_iter()
        .map(|event| event.stream)
        .filter(|stream| stream.starts_with("member/"))
        .take(3_000)
        .collect();
    assert!(!streams.is_empty(), "no member streams in the middle of the log");
    let mut events = vec![0; stores.len()];
    let mut millis: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    // The first log's stream lengths, in the order of `millis[0]`.
    let mut lengths: Vec<usize> = Vec::new();
    for stream in &streams {
        for (n, store) in stores.iter().enumerate() {
            let started = std::time::Instant::now();
            let read = store.read_stream(stream, 1, 1_000).expect("read a stream").len();
            millis[n].push(started.elapsed().as_secs_f64() * 1e3);
            events[n] += read;
            if n == 0 {
                lengths.push(read);
            }
        }
    }
    if std::env::var_os("PROBE_LENGTHS").is_some() {
        let mut by_len: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
        for (len, ms) in lengths.iter().zip(&millis[0]) {
            by_len.entry(*len).or_default().push(*ms);
        }
        for (len, ms) in by_len {
            let mean = ms.iter().sum::<f64>() / ms.len() as f64;
            let max = ms.iter().cloned().fold(0.0, f64::max);
            println!("len {len}: {} streams, mean {mean:.3} ms, max {max:.3} ms", ms.len());
        }
    }
    for (n, mut millis) in millis.into_iter().enumerate() {
        millis.sort_by(f64::total_cmp);
        let at = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
        println!(
            "{}: {} streams, {} events: p50 {:.3} ms, p99 {:.3} ms",
            dirs[n],
            millis.len(),
            events[n],
            at(0.5),
            at(0.99)
        );
    }
}
