//! The projections on a large synthetic store: rebuild throughput, query latencies, disk bytes per
//! event and peak memory.
//!
//! cargo run --release -p flowbook-projections --example projection_bench -- generate --dir D \
//!     [--members 1000000] [--branches 20000] [--events 10000000]
//! cargo run --release -p flowbook-projections --example projection_bench -- measure --dir D [--cache-mib 64]
//!
//! `generate` drives realistic commands (registrations, verifications, transfers issued and
//! completed, departures, arrivals, returns, lost contact, status changes) through the core's
//! rules into a real store, in appends of ~1,000 events, with effective times spread over two
//! years. Ten branches get 1,000 members each, for the roster figures. `measure` runs in its own
//! process so its peak memory is the projections' own.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use flowbook_core::*;
use flowbook_projections::*;
use flowbook_store::{AppendRequest, Store, StoreOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

/// The allocator the `flowbook` binary uses (see the workspace's Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REGIONS: [&str; 16] = [
    "东城区",
    "西城区",
    "朝阳区",
    "海淀区",
    "丰台区",
    "石景山区",
    "门头沟区",
    "房山区",
    "通州区",
    "顺义区",
    "昌平区",
    "大兴区",
    "怀柔区",
    "平谷区",
    "密云区",
    "延庆区",
];
const BIG_BRANCHES: usize = 10;
const BIG_BRANCH_MEMBERS: usize = 1_000;
const APPEND_EVENTS: usize = 1_000;

struct Generator {
    store: Store,
    projections: Projections,
    pending: Vec<flowbook_store::NewEvent>,
    next_position: u64,
    now: DateTime<Utc>,
    clock: DateTime<Utc>,
    rng: ChaCha8Rng,
    next_id: u128,
    refusals: std::collections::BTreeMap<&'static str, u64>,
}

impl Generator {
    fn id(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u64_pair(0xF10B_0000, self.next_id as u64)
    }

    /// Decides at the simulated clock, applies to the generator's own projections (its write
    /// model) and queues the events for the next append. Refusals are skipped.
    fn command(&mut self, actor: &str, body: CommandBody) -> bool {
        let context = Context { now: self.now, actor, config: self.projections.config() };
        let events = match decide(self.projections.world(), &Command::at(self.clock, body), &context) {
            Ok(events) => events,
            Err(rejection) => {
                *self.refusals.entry(rejection.code()).or_default() += 1;
                return false;
            }
        };
        self.queue(actor, &events);
        true
    }

    /// Applies decided events to the generator's own projections, with the positions the log
    /// will give them (it is the only writer), and queues them for the next append.
    fn queue(&mut self, actor: &str, events: &[NewEvent]) {
        for event in events {
            let recorded = RecordedEvent {
                position: self.next_position,
                stream: event.stream,
                version: self.projections.world().stream_version(event.stream) + 1,
                effective_at: event.effective_at,
                recorded_at: self.now,
                actor: actor.into(),
                data: event.data.clone(),
            };
            self.projections.apply(&recorded, |_| Vec::new());
            self.next_position += 1;
            let event_id = self.id();
            self.pending.push(codec::to_store(event, actor, event_id));
        }
        if self.pending.len() >= APPEND_EVENTS {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.pending);
        self.store.append(AppendRequest { events, ..Default::default() }).expect("append");
    }
}

fn generate(dir: &Path, members: usize, branches: usize, events: u64) {
    let started = Instant::now();
    let store = Store::open(dir, StoreOptions::default()).expect("open store");
    assert_eq!(store.head(), 0, "generate into an empty directory");
    let now = Utc::now();
    let start = now - TimeDelta::days(730);
    let mut g = Generator {
        store,
        projections: Projections::new(RulesConfig::default()),
        pending: Vec::new(),
        next_position: 1,
        now,
        clock: start - TimeDelta::days(1),
        rng: ChaCha8Rng::seed_from_u64(0x5EED_F10B),
        next_id: 0,
        refusals: Default::default(),
    };
    let mut branch_ids = Vec::with_capacity(branches);
    for n in 0..branches {
        let branch_id = BranchId(g.id());
        let kind = if n < BIG_BRANCHES { BranchKind::Committee } else { BranchKind::Branch };
        let body = CommandBody::EstablishBranch {
            branch_id,
            name: format!("第{n}支部"),
            kind,
            region: REGIONS[n % REGIONS.len()].into(),
            parent_id: None,
            organizations: vec![format!("企业{n}")],
        };
        assert!(g.command("admin", body));
        branch_ids.push(branch_id);
    }
    // Registrations over the first 10 % of the period.
    let mut member_ids = Vec::with_capacity(members);
    let registration_step = TimeDelta::days(73).num_microseconds().unwrap() / members.max(1) as i64;
    for n in 0..members {
        g.clock = start + TimeDelta::microseconds(registration_step * n as i64);
        let member_id = MemberId(g.id());
        let branch_id = if n < BIG_BRANCHES * BIG_BRANCH_MEMBERS {
            branch_ids[n / BIG_BRANCH_MEMBERS]
        } else {
            branch_ids[BIG_BRANCHES + g.rng.random_range(0..branches - BIG_BRANCHES)]
        };
        let status =
            if g.rng.random_range(0..10) == 0 { MemberStatus::Probationary } else { MemberStatus::Full };
        let name = format!("{}{}", ["张", "王", "李", "赵", "刘", "陈"][n % 6], n);
        assert!(g.command("registrar-a", CommandBody::RegisterMember { member_id, name, branch_id, status }));
        member_ids.push(member_id);
    }
    // Everything else over the remaining 90 %, until the log holds `events`.
    let remaining = events.saturating_sub(g.next_position - 1).max(1);
    let step = TimeDelta::days(650).num_microseconds().unwrap() / remaining as i64;
    let mut open_letters: VecDeque<TransferId> = VecDeque::new();
    let mut verify_cursor = 0;
    let mut iterations = 0u64;
    let latest_clock = now - TimeDelta::days(1);
    let mut accepted = 0u64;
    while g.next_position <= events {
        let member_id = member_ids[g.rng.random_range(0..members)];
        let ok = match g.rng.random_range(0..100) {
            0..=14 if verify_cursor < members => {
                verify_cursor += 1;
                g.command(
                    "registrar-b",
                    CommandBody::VerifyMember { member_id: member_ids[verify_cursor - 1] },
                )
            }
            0..=29 => {
                // Members of the big branches stay, so those rosters keep ~1,000 members.
                let big = BIG_BRANCHES * BIG_BRANCH_MEMBERS;
                let member_id = member_ids[big + g.rng.random_range(0..members - big).min(members - big - 1)];
                let transfer_id = TransferId(g.id());
                let to = TransferTarget::Branch(
                    branch_ids[BIG_BRANCHES + g.rng.random_range(0..branches - BIG_BRANCHES)],
                );
                let body = CommandBody::IssueTransfer {
                    member_id,
                    transfer_id,
                    to,
                    letter_no: None,
                    valid_until: None,
                };
                let ok = g.command("registrar-a", body);
                if ok {
                    open_letters.push_back(transfer_id);
                }
                ok
            }
            30..=44 => match open_letters.pop_front() {
                Some(transfer_id) => g.command("registrar-b", CommandBody::CompleteTransfer { transfer_id }),
                None => false,
            },
            45..=59 => {
                let inflow = branch_ids[g.rng.random_range(0..branches)];
                let body = CommandBody::Depart {
                    member_id,
                    destination_region: ["广东省深圳市", "浙江省杭州市", "江苏省苏州市", "上海市"]
                        [g.rng.random_range(0..4)]
                    .into(),
                    destination_organization: None,
                    inflow_branch_id: Some(inflow),
                    certificate_no: None,
                    expected_return: None,
                };
                g.command("registrar-a", body)
            }
            60..=74 => {
                let inflow = branch_ids[g.rng.random_range(0..branches)];
                g.command("registrar-b", CommandBody::Arrive { member_id, inflow_branch_id: inflow })
            }
            75..=84 => g.command("registrar-a", CommandBody::Return { member_id }),
            85..=92 => {
                let lost = g.rng.random_range(0..2) == 0;
                g.command("registrar-a", CommandBody::SetContact { member_id, lost, reason: None })
            }
            _ => {
                let to = [MemberStatus::Full, MemberStatus::Suspended, MemberStatus::Full]
                    [g.rng.random_range(0..3)];
                g.command(
                    "registrar-a",
                    CommandBody::ChangeStatus { member_id, to, reason: "支部大会".into() },
                )
            }
        };
        if ok {
            // Simulated time moves with what happened, not with what was refused.
            g.clock = (g.clock + TimeDelta::microseconds(step.max(1))).min(latest_clock);
            accepted += 1;
            if accepted.is_multiple_of(10_000) {
                // The expiry sweep, as the server runs it: one atomic append per member.
                for batch in expire_overdue_letters(g.projections.world(), g.clock) {
                    g.queue(SYSTEM_ACTOR, &batch);
                }
            }
        }
        iterations += 1;
        if iterations.is_multiple_of(1_000_000) {
            eprintln!(
                "generate: {} events, {:.0} s, refused so far: {:?}",
                g.next_position - 1,
                started.elapsed().as_secs_f64(),
                g.refusals
            );
        }
    }
    g.flush();
    println!(
        "generated {} events ({} members, {} branches) in {:.1} s",
        g.store.head(),
        members,
        branches,
        started.elapsed().as_secs_f64()
    );
}

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn time_ms(mut run: impl FnMut()) -> f64 {
    let started = Instant::now();
    run();
    started.elapsed().as_secs_f64() * 1_000.0
}

fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn measure(dir: &Path, cache_mib: u64) {
    // sled's cache, passed explicitly: 64 MiB by default here, what a 2 GiB budget at 10 M events
    // affords (the store's own default is 256; at this size no cache size reads histories faster).
    let options = StoreOptions { cache_capacity_bytes: cache_mib * 1024 * 1024, ..StoreOptions::default() };
    let store = Arc::new(Store::open(dir, options).expect("open store"));
    let events = store.head();
    let started = Instant::now();
    let live = Live::open(Arc::clone(&store), RulesConfig::default(), |_, _| {}).expect("rebuild");
    let rebuild_s = started.elapsed().as_secs_f64();
    let memory_after_rebuild = peak_memory_mib();
    let now = Utc::now();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let projections = live.read();
    let members: Vec<MemberId> = projections.world().members().map(|m| m.member_id).collect();
    let big = projections.branches().into_iter().max_by_key(|b| b.home_count).expect("a branch");
    drop(projections);

    // Two rounds of 2,000 random members: the first right after the rebuild, when every page a
    // history needs is read and every buffer for it allocated afresh; the second (other members)
    // as a server that has been answering for a while sees it.
    let mut histories = || -> Vec<f64> {
        (0..2_000)
            .map(|_| {
                let member = members[rng.random_range(0..members.len())];
                time_ms(|| {
                    live.member_history(member, None).unwrap();
                })
            })
            .collect()
    };
    let history_first = histories();
    let history: Vec<f64> = histories();
    let roster_now: Vec<f64> = (0..300)
        .map(|_| time_ms(|| assert!(live.read().roster(big.branch_id, &At::LATEST).is_some())))
        .collect();
    let past = At::new(Some(now - TimeDelta::days(365)), None);
    let roster_past: Vec<f64> =
        (0..300).map(|_| time_ms(|| assert!(live.read().roster(big.branch_id, &past).is_some()))).collect();
    let quarter_start = now - TimeDelta::days(365);
    let flows: Vec<f64> = (0..100)
        .map(|_| {
            time_ms(|| {
                live.read().flows(
                    quarter_start,
                    quarter_start + TimeDelta::days(91),
                    FlowGrouping::Region,
                    None,
                );
            })
        })
        .collect();
    let roster_size = live.read().roster(big.branch_id, &At::LATEST).unwrap().len();
    let roster_past_size = live.read().roster(big.branch_id, &past).unwrap().len();
    let disk = flowbook_store::disk_bytes(dir);
    let (first50, first99) = percentiles(history_first);
    let (h50, h99) = percentiles(history);
    let (rn50, rn99) = percentiles(roster_now);
    let (rp50, rp99) = percentiles(roster_past);
    let (f50, f99) = percentiles(flows);
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| events | {events} |");
    println!("| members / branches | {} / {} |", members.len(), live.read().world().branches().count());
    println!("| rebuild | {rebuild_s:.1} s = {:.0} events/s |", events as f64 / rebuild_s);
    println!("| member history, first 2,000 after the rebuild, p50 / p99 | {first50:.3} / {first99:.3} ms |");
    println!("| member history, the next 2,000 (other members), p50 / p99 | {h50:.3} / {h99:.3} ms |");
    println!("| roster now ({roster_size} members) p50 / p99 | {rn50:.3} / {rn99:.3} ms |");
    println!("| roster a year ago ({roster_past_size} members) p50 / p99 | {rp50:.3} / {rp99:.3} ms |");
    println!("| flows for a quarter by region p50 / p99 | {f50:.3} / {f99:.3} ms |");
    println!(
        "| disk | {:.0} bytes/event ({:.2} GiB) |",
        disk as f64 / events.max(1) as f64,
        disk as f64 / (1u64 << 30) as f64
    );
    println!(
        "| peak memory (VmHWM) after rebuild / at end | {memory_after_rebuild:.0} / {:.0} MiB |",
        peak_memory_mib()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let phase = args.next().unwrap_or_default();
    let (mut dir, mut members, mut branches, mut events, mut cache_mib) =
        (PathBuf::from("target/bench-projections"), 1_000_000, 20_000, 10_000_000u64, 64u64);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => dir = value.into(),
            "--members" => members = value.parse().expect("--members N"),
            "--branches" => branches = value.parse().expect("--branches N"),
            "--events" => events = value.parse().expect("--events N"),
            "--cache-mib" => cache_mib = value.parse().expect("--cache-mib N"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(branches > BIG_BRANCHES && members > BIG_BRANCHES * BIG_BRANCH_MEMBERS, "too small a district");
    match phase.as_str() {
        "generate" => generate(&dir, members, branches, events),
        "measure" => measure(&dir, cache_mib),
        _ => {
            eprintln!("usage: projection_bench generate|measure --dir DIR [--members N] [--branches N] [--events N] [--cache-mib N]");
            std::process::exit(2);
        }
    }
}
