//! Given / when / then: every rule of DOMAIN.md, allowed and refused, and every 422 code.
//!
//! A [`Book`] is a tiny log: commands go through `decide`, accepted events are recorded and
//! applied to the `World`, refused ones must leave both untouched. After every accepted command
//! the incrementally applied world must equal a fresh fold of the whole log.

use chrono::{DateTime, TimeDelta, Utc};
use flowbook_core::*;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    "2026-10-01T00:00:00Z".parse().unwrap()
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
fn transfer(n: u128) -> TransferId {
    TransferId(Uuid::from_u128(0x7000 + n))
}

struct Book {
    world: World,
    log: Vec<RecordedEvent>,
    now: DateTime<Utc>,
    actor: String,
    config: RulesConfig,
}

impl Book {
    fn new() -> Book {
        Book {
            world: World::default(),
            log: Vec::new(),
            now: t0(),
            actor: "alice".into(),
            config: RulesConfig::default(),
        }
    }

    /// A small district: branches 1 and 2 (established 400 days ago), committee 3, and member 1
    /// (full) in branch 1 and member 2 (probationary) in branch 2, registered 300 days ago.
    fn district() -> Book {
        let mut book = Book::new();
        for (n, kind) in [(1, BranchKind::Branch), (2, BranchKind::Branch), (3, BranchKind::Committee)] {
            book.ok_at(t0() - days(400), establish(n, kind));
        }
        book.ok_at(t0() - days(300), register(1, 1, MemberStatus::Full));
        book.ok_at(t0() - days(300), register(2, 2, MemberStatus::Probationary));
        book
    }

    fn decide(&self, command: &Command) -> Result<Vec<NewEvent>, Rejection> {
        let context = Context { now: self.now, actor: &self.actor, config: &self.config };
        decide(&self.world, command, &context)
    }

    fn record(&mut self, events: &[NewEvent], actor: &str) -> Vec<RecordedEvent> {
        let mut recorded = Vec::new();
        for event in events {
            let event = RecordedEvent {
                position: self.log.len() as u64 + 1,
                stream: event.stream,
                version: self.world.stream_version(event.stream) + 1,
                effective_at: event.effective_at,
                recorded_at: self.now,
                actor: actor.into(),
                data: event.data.clone(),
            };
            self.log.push(event.clone());
            let log = &self.log;
            self.world.apply(&event, |id| {
                log.iter().filter(|e| e.stream == StreamId::Member(id)).cloned().collect()
            });
            recorded.push(event);
        }
        let fold = |world: &mut World| {
            for event in &self.log {
                world.apply(event, |id| {
                    self.log
                        .iter()
                        .filter(|e| e.stream == StreamId::Member(id) && e.position <= event.position)
                        .cloned()
                        .collect()
                });
            }
        };
        let mut refolded = World::default();
        fold(&mut refolded);
        assert_eq!(refolded, self.world, "incremental world differs from a fresh fold");
        // As a rebuild folds: the home index made once, at the end.
        let mut rebuilt = World::default();
        rebuilt.defer_home_index();
        fold(&mut rebuilt);
        rebuilt.index_homes();
        assert_eq!(rebuilt, self.world, "a fold with the home index made at the end differs");
        recorded
    }

    fn run(&mut self, command: Command) -> Result<Vec<RecordedEvent>, Rejection> {
        let events = self.decide(&command)?;
        let actor = self.actor.clone();
        Ok(self.record(&events, &actor))
    }

    fn ok(&mut self, body: CommandBody) -> Vec<RecordedEvent> {
        self.run(Command::now(body.clone())).unwrap_or_else(|e| panic!("{body:?} refused: {}", e.code()))
    }

    fn ok_at(&mut self, at: DateTime<Utc>, body: CommandBody) -> Vec<RecordedEvent> {
        self.run(Command::at(at, body.clone())).unwrap_or_else(|e| panic!("{body:?} refused: {}", e.code()))
    }

    /// Then: refused with `code`, and nothing changed.
    fn refuse(&mut self, command: Command, code: &str) {
        let before = (self.world.clone(), self.log.len());
        match self.decide(&command) {
            Ok(events) => panic!("expected {code}, got {events:?}"),
            Err(rejection) => assert_eq!(rejection.code(), code, "{command:?}: {rejection}"),
        }
        assert_eq!((self.world.clone(), self.log.len()), before);
    }

    fn refuse_now(&mut self, body: CommandBody, code: &str) {
        self.refuse(Command::now(body), code)
    }

    fn member(&self, n: u128) -> &MemberState {
        self.world.member(member(n)).expect("member exists")
    }

    fn position_of(&self, event_type: &str) -> u64 {
        self.log.iter().rev().find(|e| e.data.event_type() == event_type).expect("event recorded").position
    }

    fn retract(&self, position: u64) -> Command {
        let target = self.log.get(position as usize - 1).map(|e| RetractTarget {
            position,
            stream: e.stream,
            event_type: e.data.event_type().into(),
        });
        Command::now(CommandBody::Retract { target, reason: "entered by mistake".into() })
    }
}

fn establish(n: u128, kind: BranchKind) -> CommandBody {
    CommandBody::EstablishBranch {
        branch_id: branch(n),
        name: format!("第{n}支部"),
        kind,
        region: "东城区".into(),
        parent_id: None,
        organizations: vec![],
    }
}
fn register(m: u128, b: u128, status: MemberStatus) -> CommandBody {
    CommandBody::RegisterMember {
        member_id: member(m), name: format!("张{m}"), branch_id: branch(b), status
    }
}
fn issue(m: u128, t: u128, to: u128) -> CommandBody {
    CommandBody::IssueTransfer {
        member_id: member(m),
        transfer_id: transfer(t),
        to: TransferTarget::Branch(branch(to)),
        letter_no: None,
        valid_until: None,
    }
}
fn issue_until(m: u128, t: u128, to: u128, valid_until: DateTime<Utc>) -> CommandBody {
    CommandBody::IssueTransfer {
        member_id: member(m),
        transfer_id: transfer(t),
        to: TransferTarget::Branch(branch(to)),
        letter_no: Some("介字第001号".into()),
        valid_until: Some(valid_until),
    }
}
fn complete(t: u128) -> CommandBody {
    CommandBody::CompleteTransfer { transfer_id: transfer(t) }
}
fn depart(m: u128, inflow: Option<u128>) -> CommandBody {
    CommandBody::Depart {
        member_id: member(m),
        destination_region: "深圳市".into(),
        destination_organization: Some("某科技公司".into()),
        inflow_branch_id: inflow.map(branch),
        certificate_no: Some("流001".into()),
        expected_return: None,
    }
}
fn arrive(m: u128, b: u128) -> CommandBody {
    CommandBody::Arrive { member_id: member(m), inflow_branch_id: branch(b) }
}
fn status(m: u128, to: MemberStatus) -> CommandBody {
    CommandBody::ChangeStatus { member_id: member(m), to, reason: "支部大会决议".into() }
}
fn discover_unknown(m: u128) -> CommandBody {
    CommandBody::DiscoverPocketMember {
        subject: DiscoverySubject::Unknown {
            new_member_id: member(m),
            name: "李四".into(),
            status: MemberStatus::Full,
        },
        source: DiscoverySource::Survey,
        found_region: Some("科技园".into()),
        found_organization: Some("某物流公司".into()),
    }
}
fn place(m: u128, b: u128) -> CommandBody {
    CommandBody::PlacePocketMember { member_id: member(m), branch_id: branch(b) }
}
fn contact(m: u128, lost: bool) -> CommandBody {
    CommandBody::SetContact { member_id: member(m), lost, reason: None }
}

// ---- codes -------------------------------------------------------------------------------------

#[test]
fn every_rule_error_has_its_own_api_code() {
    let codes: std::collections::HashSet<&str> = RuleError::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(codes.len(), 20);
    for code in [
        "same_branch",
        "branch_dissolved",
        "open_transfer",
        "no_open_transfer",
        "not_mobile",
        "already_mobile",
        "no_home_branch",
        "not_pocket",
        "member_inactive",
        "effective_in_future",
        "effective_before_latest",
        "invalid_transition",
        "successor_required",
        "idempotency_key_reused",
        "already_retracted",
        "invalid_validity",
        "letter_expired",
        "branch_not_established",
        "not_latest",
        "same_actor",
    ] {
        assert!(codes.contains(code), "{code}");
    }
}

// ---- branches ----------------------------------------------------------------------------------

#[test]
fn establishing_a_branch_records_its_past_founding_date() {
    let mut book = Book::new();
    let events = book.ok_at("2015-07-01T00:00:00Z".parse().unwrap(), establish(1, BranchKind::JointBranch));
    assert_eq!(events[0].effective_at.to_rfc3339(), "2015-07-01T00:00:00+00:00");
    assert_eq!(book.world.branch(branch(1)).unwrap().kind, BranchKind::JointBranch);
}

#[test]
fn establishing_refuses_bad_input_and_taken_ids() {
    let mut book = Book::district();
    book.refuse_now(establish(1, BranchKind::Branch), "already_exists");
    let mut long = establish(9, BranchKind::Branch);
    if let CommandBody::EstablishBranch { name, .. } = &mut long {
        *name = "长".repeat(201);
    }
    book.refuse_now(long, "malformed");
    let mut blank = establish(9, BranchKind::Branch);
    if let CommandBody::EstablishBranch { region, .. } = &mut blank {
        *region = "  ".into();
    }
    book.refuse_now(blank, "malformed");
    let mut orphan = establish(9, BranchKind::Branch);
    if let CommandBody::EstablishBranch { parent_id, .. } = &mut orphan {
        *parent_id = Some(branch(99));
    }
    book.refuse_now(orphan, "not_found");
}

#[test]
fn a_child_branch_needs_a_live_parent_established_before_it() {
    let mut book = Book::district();
    let child = |n| {
        let mut body = establish(n, BranchKind::Branch);
        if let CommandBody::EstablishBranch { parent_id, .. } = &mut body {
            *parent_id = Some(branch(3));
        }
        body
    };
    book.refuse(Command::at(t0() - days(500), child(10)), "branch_not_established");
    book.ok(child(10));
    book.ok(CommandBody::DissolveBranch { branch_id: branch(3), successor_id: None });
    book.refuse_now(child(11), "branch_dissolved");
}

#[test]
fn effective_time_may_be_at_most_five_minutes_ahead() {
    let mut book = Book::new();
    book.refuse(
        Command::at(t0() + TimeDelta::minutes(6), establish(1, BranchKind::Branch)),
        "effective_in_future",
    );
    book.ok_at(t0() + TimeDelta::minutes(5), establish(1, BranchKind::Branch));
}

#[test]
fn reclassifying_changes_the_kind_once() {
    let mut book = Book::district();
    book.refuse_now(
        CommandBody::ReclassifyBranch { branch_id: branch(1), kind: BranchKind::Branch },
        "invalid_transition",
    );
    book.ok(CommandBody::ReclassifyBranch { branch_id: branch(1), kind: BranchKind::GeneralBranch });
    assert_eq!(book.world.branch(branch(1)).unwrap().kind, BranchKind::GeneralBranch);
    book.refuse_now(
        CommandBody::ReclassifyBranch { branch_id: branch(99), kind: BranchKind::Branch },
        "not_found",
    );
}

#[test]
fn dissolving_a_branch_with_members_needs_a_successor_and_reassigns_each_member() {
    let mut book = Book::district();
    book.ok_at(t0() - days(200), register(3, 1, MemberStatus::Full));
    book.refuse_now(
        CommandBody::DissolveBranch { branch_id: branch(1), successor_id: None },
        "successor_required",
    );
    book.refuse_now(
        CommandBody::DissolveBranch { branch_id: branch(1), successor_id: Some(branch(1)) },
        "same_branch",
    );
    book.refuse_now(
        CommandBody::DissolveBranch { branch_id: branch(1), successor_id: Some(branch(99)) },
        "not_found",
    );
    let events = book.ok(CommandBody::DissolveBranch { branch_id: branch(1), successor_id: Some(branch(2)) });
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].data.event_type(), "branch_dissolved");
    for event in &events[1..] {
        assert!(matches!(event.data, EventData::MemberReassigned { from_branch_id, to_branch_id, .. }
            if from_branch_id == branch(1) && to_branch_id == branch(2)));
        assert_eq!(event.effective_at, events[0].effective_at);
    }
    assert_eq!(book.member(1).branch_id, Some(branch(2)));
    assert_eq!(book.member(3).branch_id, Some(branch(2)));
    assert_eq!(book.world.home_members(branch(1)).count(), 0);
    book.refuse_now(
        CommandBody::DissolveBranch { branch_id: branch(1), successor_id: None },
        "branch_dissolved",
    );
    book.refuse_now(
        CommandBody::DissolveBranch { branch_id: branch(3), successor_id: Some(branch(1)) },
        "branch_dissolved",
    );
}

#[test]
fn an_empty_branch_dissolves_without_a_successor() {
    let mut book = Book::district();
    let events = book.ok(CommandBody::DissolveBranch { branch_id: branch(3), successor_id: None });
    assert_eq!(events.len(), 1);
    assert!(book.world.branch(branch(3)).unwrap().is_dissolved());
}

#[test]
fn a_dissolve_may_not_take_effect_before_a_members_latest_event_or_the_successors_founding() {
    let mut book = Book::district();
    book.refuse(
        Command::at(
            t0() - days(350),
            CommandBody::DissolveBranch { branch_id: branch(1), successor_id: Some(branch(2)) },
        ),
        "effective_before_latest",
    );
    book.ok_at(t0() - days(10), establish(4, BranchKind::Branch));
    book.refuse(
        Command::at(
            t0() - days(20),
            CommandBody::DissolveBranch { branch_id: branch(1), successor_id: Some(branch(4)) },
        ),
        "branch_not_established",
    );
}

#[test]
fn a_dissolved_branch_takes_no_new_member_however_early_the_write_takes_effect() {
    let mut book = Book::district();
    book.ok(CommandBody::DissolveBranch { branch_id: branch(3), successor_id: None });
    book.refuse(Command::at(t0() - days(100), register(5, 3, MemberStatus::Full)), "branch_dissolved");
    book.refuse_now(issue(1, 1, 3), "branch_dissolved");
    book.refuse_now(depart(1, Some(3)), "branch_dissolved");
}

// ---- registration and verification ------------------------------------------------------------

#[test]
fn registration_puts_the_member_in_the_branch() {
    let book = Book::district();
    let state = book.member(2);
    assert_eq!(
        (state.branch_id, state.status, state.verified),
        (Some(branch(2)), MemberStatus::Probationary, false)
    );
    assert_eq!(state.home_since, Some(t0() - days(300)));
    assert_eq!(book.world.home_members(branch(2)).collect::<Vec<_>>(), vec![member(2)]);
}

#[test]
fn registration_is_refused_for_bad_branches_ids_and_statuses() {
    let mut book = Book::district();
    book.refuse(Command::at(t0() - days(401), register(5, 1, MemberStatus::Full)), "branch_not_established");
    book.refuse_now(register(5, 99, MemberStatus::Full), "not_found");
    book.refuse_now(register(1, 2, MemberStatus::Full), "already_exists");
    book.refuse_now(register(5, 1, MemberStatus::Suspended), "malformed");
    let mut nameless = register(5, 1, MemberStatus::Full);
    if let CommandBody::RegisterMember { name, .. } = &mut nameless {
        name.clear();
    }
    book.refuse_now(nameless, "malformed");
}

#[test]
fn a_registration_is_verified_by_a_second_person() {
    let mut book = Book::district();
    book.refuse_now(CommandBody::VerifyMember { member_id: member(1) }, "same_actor");
    book.actor = "bob".into();
    book.ok(CommandBody::VerifyMember { member_id: member(1) });
    assert!(book.member(1).verified);
    book.refuse_now(CommandBody::VerifyMember { member_id: member(1) }, "invalid_transition");
    book.refuse_now(CommandBody::VerifyMember { member_id: member(99) }, "not_found");
}

#[test]
fn in_local_mode_everyone_is_local_and_may_verify() {
    let mut book = Book::district();
    book.actor = LOCAL_ACTOR.into();
    book.ok(register(5, 1, MemberStatus::Full));
    book.ok(CommandBody::VerifyMember { member_id: member(5) });
}

// ---- transfers ---------------------------------------------------------------------------------

#[test]
fn a_letter_is_valid_30_days_by_default_and_the_sender_keeps_the_member() {
    let mut book = Book::district();
    let events = book.ok(issue(1, 1, 2));
    let EventData::TransferInitiated { valid_until, from_branch_id, ref letter_no, .. } = events[0].data
    else {
        panic!("{events:?}")
    };
    assert_eq!((valid_until, from_branch_id), (t0() + days(30), branch(1)));
    assert!(!letter_no.is_empty());
    let state = book.member(1);
    assert_eq!(state.branch_id, Some(branch(1)), "the sending branch stays responsible");
    assert_eq!(state.open_transfer.as_ref().unwrap().transfer_id, transfer(1));
}

#[test]
fn a_letter_is_valid_after_its_issue_and_for_at_most_90_days() {
    let mut book = Book::district();
    book.refuse_now(issue_until(1, 1, 2, t0() + days(91)), "invalid_validity");
    book.refuse_now(issue_until(1, 1, 2, t0()), "invalid_validity");
    book.refuse_now(issue_until(1, 1, 2, t0() - days(1)), "invalid_validity");
    book.ok(issue_until(1, 1, 2, t0() + days(90)));
}

#[test]
fn a_configured_validity_changes_the_default() {
    let mut book = Book::district();
    book.config.letter_validity_days = 45;
    let events = book.ok(issue(1, 1, 2));
    assert!(
        matches!(events[0].data, EventData::TransferInitiated { valid_until, .. } if valid_until == t0() + days(45))
    );
}

#[test]
fn a_letter_needs_another_existing_live_branch_and_no_open_letter() {
    let mut book = Book::district();
    book.refuse_now(issue(1, 1, 1), "same_branch");
    book.refuse_now(issue(1, 1, 99), "not_found");
    book.refuse_now(issue(99, 1, 2), "not_found");
    book.ok(issue(1, 1, 2));
    book.refuse_now(issue(1, 2, 3), "open_transfer");
    book.refuse_now(issue(2, 1, 1), "already_exists");
}

#[test]
fn completion_moves_the_member_effective_at_the_completion() {
    let mut book = Book::district();
    book.ok(issue(1, 1, 2));
    book.now = t0() + days(3);
    let at = t0() + days(2);
    book.ok_at(at, complete(1));
    let state = book.member(1);
    assert_eq!(
        (state.branch_id, state.home_since, state.open_transfer.clone()),
        (Some(branch(2)), Some(at), None)
    );
    assert_eq!(book.world.home_members(branch(1)).count(), 0);
    book.refuse_now(complete(1), "no_open_transfer");
    book.refuse_now(complete(99), "not_found");
}

#[test]
fn a_completion_recorded_late_counts_if_it_took_effect_in_time() {
    let mut book = Book::district();
    book.ok(issue(1, 1, 2));
    book.now = t0() + days(60);
    book.refuse_now(complete(1), "letter_expired");
    book.refuse(Command::at(t0() + days(31), complete(1)), "letter_expired");
    book.ok_at(t0() + days(29), complete(1));
    assert_eq!(book.member(1).branch_id, Some(branch(2)));
}

#[test]
fn a_letter_to_a_branch_dissolved_meanwhile_can_only_be_cancelled() {
    let mut book = Book::district();
    book.ok(issue(2, 1, 3));
    book.ok(CommandBody::DissolveBranch { branch_id: branch(3), successor_id: None });
    book.refuse_now(complete(1), "branch_dissolved");
    book.refuse_now(
        CommandBody::CancelTransfer { transfer_id: transfer(1), reason: " ".into() },
        "malformed",
    );
    book.ok(CommandBody::CancelTransfer { transfer_id: transfer(1), reason: "接收支部已撤销".into() });
    assert_eq!(book.member(2).open_transfer, None);
    book.refuse_now(
        CommandBody::CancelTransfer { transfer_id: transfer(1), reason: "again".into() },
        "no_open_transfer",
    );
    book.refuse_now(complete(1), "no_open_transfer");
}

#[test]
fn completion_into_a_branch_not_yet_established_is_refused() {
    let mut book = Book::district();
    book.ok_at(t0() + TimeDelta::minutes(1), establish(4, BranchKind::Branch));
    book.ok(issue(1, 1, 4));
    book.refuse_now(complete(1), "branch_not_established");
    book.ok_at(t0() + TimeDelta::minutes(2), complete(1));
}

#[test]
fn a_completed_transfer_out_of_the_system_takes_the_member_off_every_roster() {
    let mut book = Book::district();
    let external = CommandBody::IssueTransfer {
        member_id: member(1),
        transfer_id: transfer(1),
        to: TransferTarget::External("上海市某区委组织部".into()),
        letter_no: None,
        valid_until: None,
    };
    book.ok(external);
    book.ok(complete(1));
    assert_eq!(book.member(1).branch_id, None);
    assert_eq!(book.world.home_members(branch(1)).count(), 0);
    book.refuse_now(issue(1, 2, 2), "no_home_branch");
}

#[test]
fn an_empty_external_organisation_is_malformed() {
    let mut book = Book::district();
    let body = CommandBody::IssueTransfer {
        member_id: member(1),
        transfer_id: transfer(1),
        to: TransferTarget::External("".into()),
        letter_no: None,
        valid_until: None,
    };
    book.refuse_now(body, "malformed");
}

// ---- expiry sweep ------------------------------------------------------------------------------

#[test]
fn the_sweep_expires_overdue_letters_and_flags_pocket_members_once() {
    let mut book = Book::district();
    book.ok(issue(1, 1, 2));
    book.ok(issue_until(2, 2, 1, t0() + days(60)));
    book.now = t0() + days(31);
    let batches = expire_overdue_letters(&book.world, book.now);
    assert_eq!(batches.len(), 1, "only the 30-day letter is overdue");
    let batch = &batches[0];
    assert_eq!(
        batch.iter().map(|e| e.data.event_type()).collect::<Vec<_>>(),
        ["transfer_expired", "pocket_member_discovered"]
    );
    assert!(batch.iter().all(|e| e.effective_at == t0() + days(30)));
    book.record(batch, SYSTEM_ACTOR);
    let state = book.member(1);
    assert_eq!(state.branch_id, Some(branch(1)), "the sender stays responsible");
    assert_eq!(state.pocket.as_ref().unwrap().source, DiscoverySource::ExpiredLetter);
    assert!(state.open_transfer.is_none());
    assert!(expire_overdue_letters(&book.world, book.now).is_empty(), "a second run appends nothing");
    book.refuse_now(complete(1), "no_open_transfer");
}

#[test]
fn a_letter_is_not_overdue_at_its_last_valid_instant() {
    let mut book = Book::district();
    book.ok(issue(1, 1, 2));
    assert!(expire_overdue_letters(&book.world, t0() + days(30)).is_empty());
    assert_eq!(expire_overdue_letters(&book.world, t0() + days(30) + TimeDelta::seconds(1)).len(), 1);
}

#[test]
fn expiry_takes_effect_at_the_members_latest_event_if_that_is_later() {
    let mut book = Book::district();
    book.ok(issue(1, 1, 2));
    book.now = t0() + days(40);
    book.ok_at(t0() + days(35), contact(1, true));
    let batches = expire_overdue_letters(&book.world, book.now);
    assert!(batches[0].iter().all(|e| e.effective_at == t0() + days(35)));
}

#[test]
fn a_swept_letter_whose_paper_completion_arrives_later_is_corrected_by_retractions() {
    let mut book = Book::district();
    book.ok(issue(1, 1, 2));
    book.now = t0() + days(31);
    let batch = expire_overdue_letters(&book.world, book.now).remove(0);
    book.record(&batch, SYSTEM_ACTOR);
    book.now = t0() + days(45);
    let expired = book.position_of("transfer_expired");
    let discovered = book.position_of("pocket_member_discovered");
    book.refuse(book.retract(expired), "not_latest");
    book.run(book.retract(discovered)).unwrap();
    book.run(book.retract(expired)).unwrap();
    assert!(book.member(1).open_transfer.is_some() && book.member(1).pocket.is_none());
    book.ok_at(t0() + days(20), complete(1));
    assert_eq!(book.member(1).branch_id, Some(branch(2)));
}

// ---- mobile members ----------------------------------------------------------------------------

#[test]
fn a_departure_records_where_the_member_went_and_keeps_the_home() {
    let mut book = Book::district();
    book.ok(depart(1, Some(2)));
    let state = book.member(1);
    let mobile = state.mobile.as_ref().unwrap();
    assert_eq!(state.branch_id, Some(branch(1)));
    assert_eq!(
        (mobile.planned_inflow_branch_id, mobile.inflow_branch_id),
        (Some(branch(2)), None),
        "only planned"
    );
    book.refuse_now(depart(1, None), "already_mobile");
}

#[test]
fn a_departure_needs_a_home_no_open_letter_and_another_inflow_branch() {
    let mut book = Book::district();
    book.refuse_now(depart(1, Some(1)), "same_branch");
    book.refuse_now(depart(1, Some(99)), "not_found");
    book.ok(issue(1, 1, 2));
    book.refuse_now(depart(1, None), "open_transfer");
    book.ok(discover_unknown(7));
    book.refuse_now(depart(7, None), "no_home_branch");
    let mut regionless = depart(2, None);
    if let CommandBody::Depart { destination_region, .. } = &mut regionless {
        destination_region.clear();
    }
    book.refuse_now(regionless, "malformed");
}

#[test]
fn an_arrival_at_the_inflow_branch_makes_the_member_a_visitor_there() {
    let mut book = Book::district();
    book.refuse_now(arrive(1, 2), "not_mobile");
    book.ok(depart(1, None));
    book.refuse_now(arrive(1, 1), "same_branch");
    book.refuse_now(arrive(1, 99), "not_found");
    book.ok(arrive(1, 2));
    let mobile = book.member(1).mobile.clone().unwrap();
    assert_eq!((mobile.inflow_branch_id, mobile.arrived_at), (Some(branch(2)), Some(t0())));
    book.now = t0() + days(10);
    book.ok(arrive(1, 2));
    assert_eq!(
        book.member(1).mobile.as_ref().unwrap().arrived_at,
        Some(t0()),
        "same branch: the clock runs on"
    );
}

#[test]
fn an_arrival_cannot_precede_the_inflow_branchs_founding() {
    let mut book = Book::district();
    book.ok(depart(1, None));
    book.ok_at(t0() + TimeDelta::minutes(3), establish(4, BranchKind::Branch));
    book.refuse_now(arrive(1, 4), "branch_not_established");
}

#[test]
fn a_return_or_a_completed_transfer_ends_mobility() {
    let mut book = Book::district();
    book.refuse_now(CommandBody::Return { member_id: member(1) }, "not_mobile");
    book.ok(depart(1, None));
    book.ok(CommandBody::Return { member_id: member(1) });
    assert!(book.member(1).mobile.is_none());
    book.ok(depart(2, None));
    book.ok(issue(2, 1, 1));
    book.ok(complete(1));
    assert!(book.member(2).mobile.is_none());
}

// ---- pocket members ----------------------------------------------------------------------------

#[test]
fn discovering_an_unknown_person_creates_an_unplaced_pocket_member() {
    let mut book = Book::district();
    book.ok(discover_unknown(7));
    let state = book.member(7);
    assert_eq!((state.branch_id, state.status, &*state.name), (None, MemberStatus::Full, "李四"));
    assert_eq!(state.pocket.as_ref().unwrap().source, DiscoverySource::Survey);
    book.refuse_now(discover_unknown(7), "already_exists");
    book.refuse_now(discover_unknown(1), "already_exists");
}

#[test]
fn placement_makes_the_branch_home_and_ends_the_pocket() {
    let mut book = Book::district();
    book.ok(discover_unknown(7));
    book.refuse_now(place(7, 99), "not_found");
    book.refuse_now(place(1, 2), "not_pocket");
    book.ok(place(7, 2));
    let state = book.member(7);
    assert_eq!((state.branch_id, state.pocket.clone()), (Some(branch(2)), None));
    book.refuse_now(place(7, 1), "not_pocket");
}

#[test]
fn placement_respects_the_branchs_life() {
    let mut book = Book::district();
    book.ok(discover_unknown(7));
    book.ok(CommandBody::DissolveBranch { branch_id: branch(3), successor_id: None });
    book.refuse_now(place(7, 3), "branch_dissolved");
    book.ok_at(t0() + TimeDelta::minutes(4), establish(4, BranchKind::Branch));
    book.refuse_now(place(7, 4), "branch_not_established");
}

#[test]
fn a_known_member_is_discovered_once_until_placed() {
    let mut book = Book::district();
    let known = |source| CommandBody::DiscoverPocketMember {
        subject: DiscoverySubject::Known(member(1)),
        source,
        found_region: None,
        found_organization: None,
    };
    book.ok(known(DiscoverySource::SelfDeclared));
    book.refuse_now(known(DiscoverySource::Survey), "invalid_transition");
    book.ok(place(1, 1));
    book.ok(known(DiscoverySource::Survey));
}

// ---- contact and status ------------------------------------------------------------------------

#[test]
fn contact_is_lost_and_restored_in_turn() {
    let mut book = Book::district();
    book.refuse_now(contact(1, false), "invalid_transition");
    book.ok(contact(1, true));
    assert_eq!(book.member(1).contact_lost_since, Some(t0()));
    book.refuse_now(contact(1, true), "invalid_transition");
    book.ok(contact(1, false));
    assert_eq!(book.member(1).contact_lost_since, None);
}

#[test]
fn status_changes_follow_the_allowed_transitions() {
    let mut book = Book::district();
    book.refuse_now(status(1, MemberStatus::Probationary), "invalid_transition");
    book.refuse_now(status(1, MemberStatus::Full), "invalid_transition");
    book.ok(status(2, MemberStatus::Probationary)); // extended
    assert_eq!(book.member(2).probation_since, Some(t0()));
    book.ok(status(2, MemberStatus::Full)); // converted
    book.ok(status(2, MemberStatus::Suspended));
    book.refuse_now(status(2, MemberStatus::Probationary), "invalid_transition");
    book.ok(status(2, MemberStatus::Full)); // reinstated
    book.refuse_now(
        CommandBody::ChangeStatus { member_id: member(2), to: MemberStatus::Left, reason: "".into() },
        "malformed",
    );
}

#[test]
fn left_and_deceased_close_the_record() {
    let mut book = Book::district();
    book.ok(issue(1, 1, 2));
    book.refuse_now(status(1, MemberStatus::Left), "open_transfer");
    book.ok(status(2, MemberStatus::Deceased));
    assert_eq!(book.member(2).branch_id, None);
    assert_eq!(book.world.home_members(branch(2)).count(), 0);
    for body in [status(2, MemberStatus::Full), contact(2, true), depart(2, None), issue(2, 5, 1)] {
        book.refuse_now(body, "member_inactive");
    }
}

// ---- effective time ----------------------------------------------------------------------------

#[test]
fn a_members_history_never_goes_back_in_effective_time() {
    let mut book = Book::district();
    book.ok_at(t0() - days(10), contact(1, true));
    book.refuse(Command::at(t0() - days(11), contact(1, false)), "effective_before_latest");
    book.ok_at(t0() - days(10), contact(1, false));
}

#[test]
fn the_default_effective_time_is_the_members_latest_when_that_is_ahead_of_now() {
    let mut book = Book::district();
    let ahead = t0() + TimeDelta::minutes(4);
    book.ok_at(ahead, contact(1, true));
    let events = book.ok(contact(1, false));
    assert_eq!(events[0].effective_at, ahead);
}

// ---- retraction --------------------------------------------------------------------------------

#[test]
fn retracting_the_latest_event_undoes_it_everywhere() {
    let mut book = Book::district();
    book.ok(issue(1, 1, 2));
    book.ok(complete(1));
    let completed = book.position_of("transfer_completed");
    book.run(book.retract(completed)).unwrap();
    let state = book.member(1);
    assert_eq!(state.branch_id, Some(branch(1)));
    assert_eq!(state.open_transfer.as_ref().unwrap().transfer_id, transfer(1));
    assert_eq!(book.world.home_members(branch(2)).collect::<Vec<_>>(), vec![member(2)]);
    book.refuse(book.retract(completed), "already_retracted");
    book.ok(complete(1));
}

#[test]
fn only_the_latest_live_event_can_be_retracted() {
    let mut book = Book::district();
    book.ok(contact(1, true));
    let lost = book.position_of("contact_lost");
    book.ok(contact(1, false));
    book.refuse(book.retract(lost), "not_latest");
    let restored = book.position_of("contact_restored");
    book.run(book.retract(restored)).unwrap();
    book.run(book.retract(lost)).unwrap();
    assert_eq!(book.member(1).contact_lost_since, None);
    // Already retracted wins over everything else that applies.
    book.refuse(book.retract(restored), "already_retracted");
}

#[test]
fn branch_events_retractions_and_reassignments_cannot_be_retracted() {
    let mut book = Book::district();
    book.refuse(book.retract(1), "invalid_transition");
    book.ok(contact(1, true));
    let retraction = book.run(book.retract(book.position_of("contact_lost"))).unwrap()[0].position;
    book.refuse(book.retract(retraction), "invalid_transition");
    book.ok(CommandBody::DissolveBranch { branch_id: branch(2), successor_id: Some(branch(1)) });
    book.refuse(book.retract(book.position_of("member_reassigned")), "invalid_transition");
    book.refuse(Command::now(CommandBody::Retract { target: None, reason: "x".into() }), "not_found");
    book.refuse(Command::now(CommandBody::Retract { target: None, reason: "".into() }), "malformed");
}

#[test]
fn retractions_do_not_count_toward_the_latest_effective_time() {
    let mut book = Book::district();
    book.ok_at(t0() - days(5), contact(1, true));
    book.ok_at(t0() - days(1), contact(1, false));
    book.run(book.retract(book.position_of("contact_restored"))).unwrap();
    book.ok_at(t0() - days(3), contact(1, false));
}

#[test]
fn retracting_a_registration_removes_the_member_and_frees_the_id() {
    let mut book = Book::new();
    book.ok_at(t0() - days(10), establish(1, BranchKind::Branch));
    book.ok(register(1, 1, MemberStatus::Full));
    book.run(book.retract(book.position_of("member_registered"))).unwrap();
    assert!(book.world.member(member(1)).is_none());
    assert_eq!(book.world.home_members(branch(1)).count(), 0);
    book.refuse_now(CommandBody::VerifyMember { member_id: member(1) }, "not_found");
    book.ok(register(1, 1, MemberStatus::Probationary));
    assert_eq!(book.world.stream_version(StreamId::Member(member(1))), 3);
}
