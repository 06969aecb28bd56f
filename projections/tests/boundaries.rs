//! Table tests: each member flag, each branch flag and each statistic at its boundary, and the
//! as-of / known-at answers around a late entry and a retraction.

use chrono::{DateTime, TimeDelta, Utc};
use flowbook_core::*;
use flowbook_projections::*;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}
fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}
fn branch(n: u128) -> BranchId {
    BranchId(Uuid::from_u128(0xB000 + n))
}
fn member(n: u128) -> MemberId {
    MemberId(Uuid::from_u128(0xA000 + n))
}

/// Commands through the rules into the projections, with a clock for both times.
struct Book {
    projections: Projections,
    log: Vec<RecordedEvent>,
    now: DateTime<Utc>,
}

impl Book {
    fn new() -> Book {
        let mut book = Book { projections: Projections::new(RulesConfig::default()), log: vec![], now: t0() };
        for n in 1..=3 {
            let body = CommandBody::EstablishBranch {
                branch_id: branch(n),
                name: format!("第{n}支部"),
                kind: BranchKind::Branch,
                region: ["东城区", "西城区", "东城区"][n as usize - 1].into(),
                parent_id: None,
                organizations: vec![],
            };
            book.at(t0() - days(1000), body);
        }
        book
    }

    fn run(&mut self, actor: &str, command: Command) -> Vec<RecordedEvent> {
        let context = Context { now: self.now, actor, config: self.projections.config() };
        let events = decide(self.projections.world(), &command, &context)
            .unwrap_or_else(|r| panic!("{command:?} refused: {}", r.code()));
        self.record(&events, actor)
    }

    fn record(&mut self, events: &[NewEvent], actor: &str) -> Vec<RecordedEvent> {
        let mut recorded = Vec::new();
        for event in events {
            let event = RecordedEvent {
                position: self.log.len() as u64 + 1,
                stream: event.stream,
                version: self.projections.world().stream_version(event.stream) + 1,
                effective_at: event.effective_at,
                recorded_at: self.now,
                actor: actor.into(),
                data: event.data.clone(),
            };
            self.log.push(event.clone());
            let log = &self.log;
            self.projections.apply(&event, |id| {
                log.iter().filter(|e| e.stream == StreamId::Member(id)).cloned().collect()
            });
            recorded.push(event);
        }
        recorded
    }

    fn ok(&mut self, body: CommandBody) -> Vec<RecordedEvent> {
        self.run("alice", Command::now(body))
    }

    fn at(&mut self, at: DateTime<Utc>, body: CommandBody) -> Vec<RecordedEvent> {
        self.run("alice", Command::at(at, body))
    }

    fn register(&mut self, m: u128, b: u128, status: MemberStatus) {
        let body = CommandBody::RegisterMember {
            member_id: member(m),
            name: format!("成员{m}"),
            branch_id: branch(b),
            status,
        };
        self.ok(body);
    }

    fn flags(&self, m: u128, at: DateTime<Utc>) -> Vec<&'static str> {
        self.projections.member(member(m), at).unwrap().flags
    }

    fn history(&self, m: u128) -> Vec<RecordedEvent> {
        self.log.iter().filter(|e| e.stream == StreamId::Member(member(m))).cloned().collect()
    }
}

fn depart(m: u128) -> CommandBody {
    CommandBody::Depart {
        member_id: member(m),
        destination_region: "广东省深圳市".into(),
        destination_organization: None,
        inflow_branch_id: None,
        certificate_no: None,
        expected_return: None,
    }
}

// ---- member flags ------------------------------------------------------------------------------

#[test]
fn unverified_after_more_than_30_days() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    assert!(book.flags(1, t0() + days(30)).is_empty());
    assert_eq!(book.flags(1, t0() + days(30) + TimeDelta::seconds(1)), ["unverified"]);
    book.run("bob", Command::now(CommandBody::VerifyMember { member_id: member(1) }));
    assert!(book.flags(1, t0() + days(31)).is_empty());
}

#[test]
fn probation_overdue_after_more_than_a_year_unless_extended() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Probationary);
    book.run("bob", Command::now(CommandBody::VerifyMember { member_id: member(1) }));
    assert!(book.flags(1, t0() + days(365)).is_empty());
    assert_eq!(book.flags(1, t0() + days(366)), ["probation_overdue"]);
    book.now = t0() + days(300);
    book.ok(CommandBody::ChangeStatus {
        member_id: member(1),
        to: MemberStatus::Probationary,
        reason: "延长".into(),
    });
    assert!(book.flags(1, t0() + days(366)).is_empty(), "an extension restarts the year");
}

#[test]
fn should_transfer_after_more_than_six_months_at_one_inflow_branch() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    book.run("bob", Command::now(CommandBody::VerifyMember { member_id: member(1) }));
    book.ok(depart(1));
    book.ok(CommandBody::Arrive { member_id: member(1), inflow_branch_id: branch(2) });
    assert!(book.flags(1, t0() + days(183)).is_empty());
    assert_eq!(book.flags(1, t0() + days(183) + TimeDelta::seconds(1)), ["should_transfer"]);
}

#[test]
fn report_overdue_after_more_than_a_year_without_a_report() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    book.run("bob", Command::now(CommandBody::VerifyMember { member_id: member(1) }));
    book.ok(depart(1));
    assert!(book.flags(1, t0() + days(365)).is_empty());
    assert_eq!(book.flags(1, t0() + days(366)), ["report_overdue"]);
    book.now = t0() + days(200);
    book.ok(CommandBody::Arrive { member_id: member(1), inflow_branch_id: branch(2) });
    assert!(book.flags(1, t0() + days(366)).is_empty(), "an arrival is a report");
    assert_eq!(book.flags(1, t0() + days(200 + 184)), ["should_transfer"]);
    assert_eq!(book.flags(1, t0() + days(200 + 366)), ["should_transfer", "report_overdue"]);
}

#[test]
fn should_suspend_after_more_than_six_months_lost() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    book.run("bob", Command::now(CommandBody::VerifyMember { member_id: member(1) }));
    book.ok(CommandBody::SetContact { member_id: member(1), lost: true, reason: None });
    assert!(book.flags(1, t0() + days(183)).is_empty());
    assert_eq!(book.flags(1, t0() + days(184)), ["should_suspend"]);
    book.now = t0() + days(190);
    book.ok(CommandBody::SetContact { member_id: member(1), lost: false, reason: None });
    assert!(book.flags(1, t0() + days(191)).is_empty(), "restoring contact clears it");
}

#[test]
fn configured_numbers_move_the_boundaries() {
    let mut book = Book::new();
    book.projections = Projections::new(RulesConfig { unverified_after_days: 7, ..RulesConfig::default() });
    for n in 1..=3 {
        let body = CommandBody::EstablishBranch {
            branch_id: branch(n),
            name: format!("b{n}"),
            kind: BranchKind::Branch,
            region: "r".into(),
            parent_id: None,
            organizations: vec![],
        };
        book.log.clear();
        book.at(t0() - days(10), body);
    }
    book.register(1, 1, MemberStatus::Full);
    assert_eq!(book.flags(1, t0() + days(8)), ["unverified"]);
}

// ---- branch counts and flags -------------------------------------------------------------------

#[test]
fn below_minimum_until_three_full_members() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    book.register(2, 1, MemberStatus::Full);
    book.register(3, 1, MemberStatus::Probationary);
    let row = book.projections.branch(branch(1)).unwrap();
    assert_eq!((row.home_count, row.full_count, row.flags.clone()), (3, 2, vec!["below_minimum"]));
    book.ok(CommandBody::ChangeStatus {
        member_id: member(3),
        to: MemberStatus::Full,
        reason: "转正".into(),
    });
    assert!(book.projections.branch(branch(1)).unwrap().flags.is_empty());
    book.ok(CommandBody::ChangeStatus {
        member_id: member(3),
        to: MemberStatus::Deceased,
        reason: "病故".into(),
    });
    let row = book.projections.branch(branch(1)).unwrap();
    assert_eq!((row.home_count, row.full_count), (2, 2), "deceased members do not count");
}

#[test]
fn fifty_and_a_hundred_home_members_advise_a_bigger_kind() {
    let mut book = Book::new();
    for m in 1..=49 {
        book.register(m, 1, MemberStatus::Full);
    }
    assert!(book.projections.branch(branch(1)).unwrap().flags.is_empty());
    book.register(50, 1, MemberStatus::Probationary);
    assert_eq!(book.projections.branch(branch(1)).unwrap().flags, ["consider_general_branch"]);
    for m in 51..=100 {
        book.register(m, 1, MemberStatus::Full);
    }
    assert_eq!(
        book.projections.branch(branch(1)).unwrap().flags,
        ["consider_general_branch", "consider_committee"]
    );
    book.ok(CommandBody::ReclassifyBranch { branch_id: branch(1), kind: BranchKind::GeneralBranch });
    assert_eq!(book.projections.branch(branch(1)).unwrap().flags, ["consider_committee"]);
}

#[test]
fn visitors_count_where_they_reported_until_that_branch_is_dissolved() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    book.ok(depart(1));
    assert_eq!(book.projections.branch(branch(2)).unwrap().visiting_count, 0, "planned is not reported");
    book.ok(CommandBody::Arrive { member_id: member(1), inflow_branch_id: branch(2) });
    assert_eq!(book.projections.branch(branch(2)).unwrap().visiting_count, 1);
    assert_eq!(book.projections.branch(branch(1)).unwrap().home_count, 1, "counted at home");
    book.ok(CommandBody::DissolveBranch { branch_id: branch(2), successor_id: None });
    assert_eq!(book.projections.branch(branch(2)).unwrap().visiting_count, 0);
    assert!(book.projections.member(member(1), book.now).unwrap().mobile.is_some(), "still mobile");
    assert_eq!(book.projections.mobile_stats(book.now).by_inflow_branch, vec![]);
}

// ---- statistics --------------------------------------------------------------------------------

#[test]
fn flows_count_effective_times_in_a_half_open_period() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    book.register(2, 1, MemberStatus::Full);
    book.now = t0() + days(10);
    let issue = |m, t: u128, to: TransferTarget| CommandBody::IssueTransfer {
        member_id: member(m),
        transfer_id: TransferId(Uuid::from_u128(t)),
        to,
        letter_no: None,
        valid_until: None,
    };
    book.ok(issue(1, 1, TransferTarget::Branch(branch(2))));
    book.ok(issue(2, 2, TransferTarget::External("北京某公司".into())));
    book.ok(CommandBody::CompleteTransfer { transfer_id: TransferId(Uuid::from_u128(1)) });
    book.ok(CommandBody::CompleteTransfer { transfer_id: TransferId(Uuid::from_u128(2)) });
    let at = t0() + days(10);
    let flows = book.projections.flows(at, at + TimeDelta::seconds(1), FlowGrouping::Branch, None);
    let row = |b: BranchId| flows.rows.iter().find(|r| r.key == b.to_string()).cloned().unwrap();
    assert_eq!((row(branch(1)).transfers_out, row(branch(1)).net), (2, -2));
    assert_eq!((row(branch(2)).transfers_in, row(branch(2)).net), (1, 1));
    assert!(flows.matrix.iter().any(|c| c.to == "external:北京某公司" && c.count == 1));
    assert_eq!(
        book.projections.flows(at - days(1), at, FlowGrouping::Branch, None),
        Flows::default(),
        "to is exclusive"
    );
    let by_region = book.projections.flows(at, at + days(1), FlowGrouping::Region, None);
    let east = by_region.rows.iter().find(|r| r.key == "东城区").unwrap();
    let west = by_region.rows.iter().find(|r| r.key == "西城区").unwrap();
    assert_eq!((east.transfers_out, west.transfers_in), (2, 1));
    assert_eq!(by_region.matrix.iter().find(|c| c.from == "东城区" && c.to == "西城区").unwrap().count, 1);
}

#[test]
fn pocket_statistics_by_period_and_source() {
    let mut book = Book::new();
    let unknown = |m| CommandBody::DiscoverPocketMember {
        subject: DiscoverySubject::Unknown {
            new_member_id: member(m),
            name: format!("口袋{m}"),
            status: MemberStatus::Full,
        },
        source: DiscoverySource::Survey,
        found_region: Some("科技园".into()),
        found_organization: None,
    };
    book.ok(unknown(1));
    book.now = t0() + days(5);
    book.ok(unknown(2));
    book.ok(CommandBody::PlacePocketMember { member_id: member(1), branch_id: branch(1) });
    let all = book.projections.pocket_stats(None, None);
    assert_eq!((all.discovered, all.placed, all.open, all.by_source.survey), (2, 1, 1, 2));
    let first_days = book.projections.pocket_stats(Some(t0()), Some(t0() + days(5)));
    assert_eq!((first_days.discovered, first_days.placed), (1, 0), "the period is [from, to)");
}

#[test]
fn an_open_letter_is_overdue_only_after_its_last_valid_instant() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    let issue = CommandBody::IssueTransfer {
        member_id: member(1),
        transfer_id: TransferId(Uuid::from_u128(1)),
        to: TransferTarget::Branch(branch(2)),
        letter_no: None,
        valid_until: None,
    };
    book.ok(issue);
    let until = t0() + days(30);
    assert_eq!(book.projections.transfers(TransferFilter::Overdue, until).len(), 0);
    let later = until + TimeDelta::seconds(1);
    assert_eq!(book.projections.transfers(TransferFilter::Overdue, later).len(), 1);
    assert_eq!(book.projections.transfers(TransferFilter::Open, later)[0].state, TransferState::Overdue);
}

// ---- the past as it was known ------------------------------------------------------------------

#[test]
fn a_late_entry_changes_the_past_only_from_when_it_was_recorded() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    let issue = CommandBody::IssueTransfer {
        member_id: member(1),
        transfer_id: TransferId(Uuid::from_u128(1)),
        to: TransferTarget::Branch(branch(2)),
        letter_no: None,
        valid_until: None,
    };
    book.ok(issue);
    // The paper letter was accepted on day 5 and entered on day 20.
    book.now = t0() + days(20);
    book.at(t0() + days(5), CommandBody::CompleteTransfer { transfer_id: TransferId(Uuid::from_u128(1)) });
    let day10 = At::new(Some(t0() + days(10)), None);
    let day10_as_known_on_day15 = At::new(Some(t0() + days(10)), Some(t0() + days(15)));
    let ids = |entries: Vec<RosterEntry>| entries.into_iter().map(|e| e.member_id).collect::<Vec<_>>();
    assert_eq!(ids(book.projections.roster(branch(2), &day10).unwrap()), vec![member(1)]);
    assert_eq!(ids(book.projections.roster(branch(1), &day10).unwrap()), vec![]);
    assert_eq!(ids(book.projections.roster(branch(1), &day10_as_known_on_day15).unwrap()), vec![member(1)]);
    assert_eq!(book.projections.roster(branch(2), &day10).unwrap()[0].since, t0() + days(5));
    let view = book.projections.member_at(&book.history(1), &day10_as_known_on_day15, book.now).unwrap();
    assert_eq!(view.branch_id, Some(branch(1)));
    assert!(view.open_transfer.is_some());
}

#[test]
fn a_retraction_undoes_everywhere_but_not_in_views_known_before_it() {
    let mut book = Book::new();
    book.register(1, 1, MemberStatus::Full);
    book.now = t0() + days(1);
    let departed = book.ok(depart(1));
    book.ok(CommandBody::Arrive { member_id: member(1), inflow_branch_id: branch(2) });
    book.now = t0() + days(2);
    let arrived = book.log.last().unwrap().clone();
    let target = RetractTarget {
        position: arrived.position,
        stream: arrived.stream,
        event_type: "member_arrived".into(),
    };
    book.run("admin", Command::now(CommandBody::Retract { target: Some(target), reason: "录错".into() }));
    assert_eq!(book.projections.roster(branch(2), &At::LATEST).unwrap(), vec![]);
    let before_retraction = At::new(None, Some(t0() + days(1)));
    let roster = book.projections.roster(branch(2), &before_retraction).unwrap();
    assert_eq!(roster.len(), 1);
    assert_eq!(roster[0].relation, Relation::Visiting);
    let flows = book.projections.flows(t0(), t0() + days(3), FlowGrouping::Branch, None);
    assert_eq!(flows.rows.iter().map(|r| r.arrivals).sum::<u64>(), 0);
    let flows_then = book.projections.flows(t0(), t0() + days(3), FlowGrouping::Branch, Some(t0() + days(1)));
    assert_eq!(
        flows_then
            .rows
            .iter()
            .map(|r| (r.departures, r.arrivals))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
        (1, 1)
    );
    assert_eq!(departed.len(), 1);
    assert_eq!(book.projections.mobile_stats(book.now).reported, 0);
}

#[test]
fn a_roster_is_empty_before_the_branch_was_established() {
    let mut book = Book::new();
    let body = CommandBody::EstablishBranch {
        branch_id: branch(9),
        name: "新支部".into(),
        kind: BranchKind::Branch,
        region: "东城区".into(),
        parent_id: None,
        organizations: vec![],
    };
    book.at(t0() - days(5), body);
    book.register(1, 9, MemberStatus::Full);
    assert_eq!(book.projections.roster(branch(9), &At::new(Some(t0() - days(6)), None)).unwrap(), vec![]);
    assert_eq!(book.projections.roster(branch(9), &At::LATEST).unwrap().len(), 1);
    assert!(book.projections.roster(branch(99), &At::LATEST).is_none());
}

#[test]
fn names_are_found_by_any_chinese_substring_or_by_id() {
    let mut book = Book::new();
    for (m, name) in [(1, "欧阳娜娜"), (2, "王娜"), (3, "王小明")] {
        let body = CommandBody::RegisterMember {
            member_id: member(m),
            name: name.into(),
            branch_id: branch(1),
            status: MemberStatus::Full,
        };
        book.ok(body);
    }
    let names = |q: &str| book.projections.search(q, 10).into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names("娜"), ["欧阳娜娜", "王娜"]);
    assert_eq!(names("王"), ["王娜", "王小明"]);
    assert_eq!(names("阳娜"), ["欧阳娜娜"]);
    assert!(names("李").is_empty());
    assert_eq!(names(&member(3).to_string()), ["王小明"]);
}

#[test]
fn flows_over_any_period_count_exactly_the_flows_inside_it_across_day_and_month_edges() {
    let mut book = Book::new();
    let instants: Vec<DateTime<Utc>> = [
        "2026-01-31T23:30:00Z",
        "2026-02-01T00:00:00Z",
        "2026-02-01T00:30:00Z",
        "2026-02-28T23:59:59Z",
        "2026-03-01T00:00:00Z",
        "2026-03-15T12:00:00Z",
        "2026-04-01T00:00:00Z",
        "2026-04-01T00:00:01Z",
    ]
    .iter()
    .map(|t| t.parse().unwrap())
    .collect();
    book.now = "2026-05-01T00:00:00Z".parse().unwrap();
    for (n, at) in instants.iter().enumerate() {
        let m = 100 + n as u128;
        let register = CommandBody::RegisterMember {
            member_id: member(m),
            name: format!("成员{m}"),
            branch_id: branch(1),
            status: MemberStatus::Full,
        };
        book.at(t0(), register);
        let depart = CommandBody::Depart {
            member_id: member(m),
            destination_region: "广东省深圳市".into(),
            destination_organization: None,
            inflow_branch_id: None,
            certificate_no: None,
            expected_return: None,
        };
        book.at(*at, depart);
    }
    // Period edges: every instant, a second either side, and whole days and months around them.
    let mut edges: Vec<DateTime<Utc>> = instants
        .iter()
        .flat_map(|at| [*at - TimeDelta::seconds(1), *at, *at + TimeDelta::seconds(1)])
        .collect();
    edges.extend(
        ["2026-01-01T00:00:00Z", "2026-02-15T00:00:00Z", "2026-05-01T00:00:00Z"]
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
    );
    for from in &edges {
        for to in &edges {
            let expected = instants.iter().filter(|at| from <= *at && *at < to).count() as u64;
            for by in [FlowGrouping::Branch, FlowGrouping::Region] {
                let flows = book.projections.flows(*from, *to, by, None);
                let counted: u64 = flows.rows.iter().map(|row| row.departures).sum();
                assert_eq!(counted, expected, "departures in [{from}, {to}) by {by:?}");
            }
        }
    }
}
