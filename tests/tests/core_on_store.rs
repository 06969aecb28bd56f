//! The rules and the log together: commands decided by the core, appended (atomically, with
//! expected versions) to the real store, read back, folded again — before and after a restart —
//! must give the same world as the one maintained while writing.

use chrono::{DateTime, TimeDelta, Utc};
use flowbook_core::*;
use flowbook_projections::codec;
use flowbook_store::{AppendRequest, Store, StoreError, StoreOptions};
use uuid::Uuid;

struct Tracker {
    store: Store,
    world: World,
    now: DateTime<Utc>,
}

impl Tracker {
    fn open(dir: &std::path::Path) -> Tracker {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        let world = fold(&store);
        Tracker { store, world, now: "2026-10-01T00:00:00Z".parse().unwrap() }
    }

    /// decide → append with the versions the decision was made on → apply.
    fn write(&mut self, actor: &str, command: Command) -> Result<usize, String> {
        let config = RulesConfig::default();
        let context = Context { now: self.now, actor, config: &config };
        let events = decide(&self.world, &command, &context).map_err(|r| r.code().to_owned())?;
        self.append(actor, &events).map_err(|e| e.to_string())
    }

    fn append(&mut self, actor: &str, events: &[NewEvent]) -> Result<usize, StoreError> {
        let mut expected: Vec<(String, u64)> = Vec::new();
        for event in events {
            let name = event.stream.to_string();
            if !expected.iter().any(|(stream, _)| *stream == name) {
                expected.push((name, self.world.stream_version(event.stream)));
            }
        }
        let request = AppendRequest {
            events: events.iter().map(|e| codec::to_store(e, actor, Uuid::now_v7())).collect(),
            expected_versions: expected,
            idempotency: None,
        };
        let written = self.store.append(request)?.into_events();
        for envelope in &written {
            let event = codec::recorded(envelope).unwrap();
            let store = &self.store;
            self.world.apply(&event, |id| history(store, id));
        }
        Ok(written.len())
    }
}

fn history(store: &Store, member: MemberId) -> Vec<RecordedEvent> {
    let stream = StreamId::Member(member).to_string();
    store.read_stream(&stream, 1, 10_000).unwrap().iter().map(|e| codec::recorded(e).unwrap()).collect()
}

/// A fresh fold of the whole log.
fn fold(store: &Store) -> World {
    let mut world = World::default();
    let mut after = 0;
    loop {
        let page = store.read_log(after, 1_000).unwrap();
        let Some(last) = page.last() else { return world };
        after = last.position;
        for envelope in &page {
            let event = codec::recorded(envelope).unwrap();
            // A retraction refolds its member from the events up to and including itself.
            world.apply(&event, |id| {
                history(store, id).into_iter().filter(|e| e.position <= event.position).collect()
            });
        }
    }
}

#[test]
fn a_district_written_through_the_rules_folds_back_identically_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b1 = BranchId(Uuid::from_u128(1));
    let b2 = BranchId(Uuid::from_u128(2));
    let members: Vec<MemberId> = (10..20).map(|n| MemberId(Uuid::from_u128(n))).collect();
    {
        let mut t = Tracker::open(dir.path());
        let founded = t.now - TimeDelta::days(400);
        for (branch, name) in [(b1, "城东社区联合党支部"), (b2, "科技园第二支部")] {
            let body = CommandBody::EstablishBranch {
                branch_id: branch,
                name: name.into(),
                kind: BranchKind::JointBranch,
                region: "东城区".into(),
                parent_id: None,
                organizations: vec!["甲公司".into(), "乙协会".into()],
            };
            t.write("admin", Command::at(founded, body)).unwrap();
        }
        for (i, member) in members.iter().enumerate() {
            let body = CommandBody::RegisterMember {
                member_id: *member,
                name: format!("王{i}"),
                branch_id: if i % 2 == 0 { b1 } else { b2 },
                status: MemberStatus::Full,
            };
            t.write("alice", Command::at(founded + TimeDelta::days(1), body)).unwrap();
            t.write("bob", Command::now(CommandBody::VerifyMember { member_id: *member })).unwrap();
        }
        // A transfer completed, one left open to expire, one cancelled.
        for (n, member) in [members[0], members[2], members[6]].iter().enumerate() {
            let body = CommandBody::IssueTransfer {
                member_id: *member,
                transfer_id: TransferId(Uuid::from_u128(100 + n as u128)),
                to: TransferTarget::Branch(b2),
                letter_no: None,
                valid_until: None,
            };
            t.write("alice", Command::now(body)).unwrap();
        }
        t.write(
            "bob",
            Command::now(CommandBody::CompleteTransfer { transfer_id: TransferId(Uuid::from_u128(100)) }),
        )
        .unwrap();
        let cancel = CommandBody::CancelTransfer {
            transfer_id: TransferId(Uuid::from_u128(102)),
            reason: "本人撤回".into(),
        };
        t.write("alice", Command::now(cancel)).unwrap();
        // A mistaken departure, retracted.
        let depart = CommandBody::Depart {
            member_id: members[4],
            destination_region: "广东省深圳市".into(),
            destination_organization: None,
            inflow_branch_id: Some(b2),
            certificate_no: None,
            expected_return: None,
        };
        t.write("alice", Command::now(depart)).unwrap();
        let position = t.store.head();
        let target = RetractTarget {
            position,
            stream: StreamId::Member(members[4]),
            event_type: "member_departed".into(),
        };
        t.write(
            "admin",
            Command::now(CommandBody::Retract { target: Some(target), reason: "录入错误".into() }),
        )
        .unwrap();
        assert!(t.world.member(members[4]).unwrap().mobile.is_none());
        // The sweep, a month later: one atomic append per member.
        t.now += TimeDelta::days(31);
        for batch in expire_overdue_letters(&t.world, t.now) {
            assert_eq!(t.append(SYSTEM_ACTOR, &batch).unwrap(), 2);
        }
        assert!(t.world.member(members[2]).unwrap().pocket.is_some());
        // Dissolve with a successor: the branch event and one reassignment per member, atomically.
        let dissolve = CommandBody::DissolveBranch { branch_id: b1, successor_id: Some(b2) };
        let home_members = t.world.home_members(b1).count();
        assert_eq!(t.write("admin", Command::now(dissolve)).unwrap(), 1 + home_members);
        assert_eq!(t.world.home_members(b2).count(), members.len());
        assert_eq!(fold(&t.store), t.world, "a fresh fold differs from the world kept while writing");
        assert!(t.store.verify().unwrap().ok);
    }
    let t = Tracker::open(dir.path());
    assert_eq!(t.world.home_members(b2).count(), members.len(), "after a restart");
    assert!(t.world.branch(b1).unwrap().is_dissolved());
}

#[test]
fn a_stale_decision_is_refused_by_the_log_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tracker::open(dir.path());
    let b1 = BranchId(Uuid::from_u128(1));
    let m1 = MemberId(Uuid::from_u128(10));
    let body = CommandBody::EstablishBranch {
        branch_id: b1,
        name: "一支部".into(),
        kind: BranchKind::Branch,
        region: "西城区".into(),
        parent_id: None,
        organizations: vec![],
    };
    t.write("admin", Command::at(t.now - TimeDelta::days(10), body)).unwrap();
    let register = CommandBody::RegisterMember {
        member_id: m1,
        name: "赵六".into(),
        branch_id: b1,
        status: MemberStatus::Full,
    };
    t.write("alice", Command::now(register)).unwrap();
    // Decide on a world that is one event behind the log.
    let stale = t.world.clone();
    t.write("alice", Command::now(CommandBody::SetContact { member_id: m1, lost: true, reason: None }))
        .unwrap();
    let config = RulesConfig::default();
    let context = Context { now: t.now, actor: "bob", config: &config };
    let events =
        decide(&stale, &Command::now(CommandBody::VerifyMember { member_id: m1 }), &context).unwrap();
    let head = t.store.head();
    let request = AppendRequest {
        events: events.iter().map(|e| codec::to_store(e, "bob", Uuid::now_v7())).collect(),
        expected_versions: vec![(
            StreamId::Member(m1).to_string(),
            stale.stream_version(StreamId::Member(m1)),
        )],
        idempotency: None,
    };
    assert!(matches!(
        t.store.append(request),
        Err(StoreError::VersionConflict { expected: 1, actual: 2, .. })
    ));
    assert_eq!(t.store.head(), head);
}
