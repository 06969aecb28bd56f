//! `flowbook demo`: a realistic district with two years of history, generated deterministically
//! from a seed and written through the same path as the API — every write is an op and a JSON
//! body, prepared as an HTTP request would be, decided by the rules and appended durably. No
//! rule is bypassed: a write the rules refuse is reported, not forced.
//!
//! The story runs day by day. The generator looks only at the write model (what the rules see) to
//! pick plausible writes: members with a home and no open letter may be given a letter, mobile
//! members may report or come back, pocket members may be placed. Follow-ups (a letter handed in,
//! an arrival, a return, a confirmation after probation) are planned for later days when their
//! cause is written. A weekly sweep at the simulated time expires letters never handed in, whose
//! members become pocket members.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use flowbook_core::{BranchId, BranchKind, MemberId, MemberStatus, TransferId};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::access::Principal;
use crate::app::AppState;
use crate::error::ApiError;
use crate::writes;

/// Days of history.
pub const DAYS: i64 = 730;

/// Members registered at most (the story adds a few through registrations and surveys).
pub const MEMBERS_MAX: usize = 1_000_000;

/// The districts of the city the organisation covers; branches sit in them.
const DISTRICTS: [&str; 8] =
    ["东城区", "西城区", "朝阳区", "海淀区", "丰台区", "石景山区", "通州区", "大兴区"];

/// Where mobile members go when they leave the city.
const DESTINATIONS: [&str; 10] = [
    "广东省深圳市",
    "浙江省杭州市",
    "江苏省苏州市",
    "上海市浦东新区",
    "天津市滨海新区",
    "河北省雄安新区",
    "四川省成都市",
    "湖北省武汉市",
    "山东省青岛市",
    "福建省厦门市",
];

const SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤";
const GIVEN: &str = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力婷云鹏宇浩晨欣雪梅琳斌波峰海林国志春晓东飞颖宁佳俊慧";
const FIRMS: [&str; 16] = [
    "华信", "宏达", "鑫源", "瑞丰", "恒通", "金桥", "新星", "博远", "嘉禾", "启明", "安泰", "众诚", "天禾",
    "中益", "远航", "同创",
];
const TRADES: [&str; 8] = [
    "科技有限公司",
    "餐饮店",
    "物流有限公司",
    "律师事务所",
    "社会工作服务中心",
    "设计工作室",
    "商贸有限公司",
    "物业服务有限公司",
];

/// True with probability `p` (clamped to a probability).
fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random_bool(p.clamp(0.0, 1.0))
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("a non-empty list")
}

/// A surname and one or two given characters.
fn chinese_name(rng: &mut ChaCha8Rng) -> String {
    let surnames: Vec<char> = SURNAMES.chars().collect();
    let given: Vec<char> = GIVEN.chars().collect();
    let mut name = String::from(*pick(rng, &surnames));
    for _ in 0..1 + usize::from(chance(rng, 0.6)) {
        name.push(*pick(rng, &given));
    }
    name
}

/// What the demo wrote.
#[derive(Debug, Default)]
pub struct DemoReport {
    pub branches: usize,
    pub members: usize,
    pub writes: u64,
    pub expired: usize,
    pub retracted: usize,
    /// Writes the rules refused: (op, code, message). The story is built to need none.
    pub refused: Vec<(String, String, String)>,
}

/// A follow-up planned for a later day.
#[derive(Debug, Clone, Copy)]
enum Planned {
    Verify(MemberId),
    Confirm(MemberId),
    Complete(MemberId, TransferId),
    Cancel(MemberId, TransferId),
    Arrive(MemberId, BranchId),
    Return(MemberId),
    Restore(MemberId),
    Place(MemberId),
}

struct Story<'a> {
    state: &'a AppState,
    rng: ChaCha8Rng,
    start: DateTime<Utc>,
    /// Branches members can belong to (not committees or general branches).
    homes: Vec<(BranchId, usize)>,
    members: Vec<MemberId>,
    plans: BTreeMap<i64, Vec<Planned>>,
    placed_or_planned: HashSet<MemberId>,
    report: DemoReport,
}

/// Generates the district into the (empty) store behind `state`, ending at `end`.
pub async fn run(state: &AppState, seed: u64, members: usize, end: DateTime<Utc>) -> DemoReport {
    let start = end - TimeDelta::days(DAYS);
    let mut story = Story {
        state,
        rng: ChaCha8Rng::seed_from_u64(seed),
        start,
        homes: Vec::new(),
        members: Vec::new(),
        plans: BTreeMap::new(),
        placed_or_planned: HashSet::new(),
        report: DemoReport::default(),
    };
    story.establish_branches().await;
    let initial_wave_days = 90;
    for day in 0..DAYS {
        let mut writes = Vec::new();
        let mut touched = HashSet::new();
        let due = story.plans.remove(&day).unwrap_or_default();
        for planned in due {
            story.follow_up(day, planned, &mut touched, &mut writes);
        }
        // Most members are entered in the first three months; the last twentieth join later.
        let registrations = if day < initial_wave_days {
            members * 19 / 20 / initial_wave_days as usize + 1
        } else {
            story.quota(members as f64 / 20.0 / (DAYS - initial_wave_days) as f64)
        };
        for _ in 0..registrations.min(members.saturating_sub(story.members.len())) {
            story.register(day, &mut writes);
        }
        if day >= 30 {
            story.daily_events(day, &mut touched, &mut writes);
        }
        if day == 400 {
            story.reclassify_the_largest_branch(day, &mut writes);
        }
        story.submit(writes).await;
        if day % 7 == 6 {
            story.sweep(day).await;
        }
    }
    story.sweep(DAYS).await;
    story.retract_a_few().await;
    story.report.members = story.members.len();
    story.report
}

impl Story<'_> {
    /// A whole number of occurrences whose mean is `expected`.
    fn quota(&mut self, expected: f64) -> usize {
        expected.floor() as usize + usize::from(chance(&mut self.rng, expected.fract()))
    }

    /// A moment during office hours (08:00–18:00 in Beijing) of a day.
    fn moment(&mut self, day: i64) -> DateTime<Utc> {
        self.start
            + TimeDelta::days(day)
            + TimeDelta::seconds(60 + self.rng.random_range(0..10 * 3600 - 120) as i64)
    }

    fn plan(&mut self, day: i64, planned: Planned) {
        if day < DAYS {
            self.plans.entry(day).or_default().push(planned);
        }
    }

    async fn establish_branches(&mut self) {
        let mut writes = Vec::new();
        let at = self.start.to_rfc3339();
        let mut establish = |rng: &mut ChaCha8Rng,
                             name: String,
                             kind: BranchKind,
                             region: &str,
                             parent: Option<BranchId>,
                             organizations: Vec<String>| {
            let id = BranchId::new_v7(self.start, rng.random::<[u8; 10]>());
            writes.push((
                "branches".to_owned(),
                json!({"branch_id": id, "name": name, "kind": kind, "region": region, "parent_id": parent,
                       "organizations": organizations, "effective_at": at}),
            ));
            id
        };
        let mut homes = Vec::new();
        for district in DISTRICTS {
            let committee = establish(
                &mut self.rng,
                format!("{district}非公有制经济组织综合委员会"),
                BranchKind::Committee,
                district,
                None,
                Vec::new(),
            );
            for general in 1..=3 {
                let general_id = establish(
                    &mut self.rng,
                    format!("{district}第{general}党总支"),
                    BranchKind::GeneralBranch,
                    district,
                    Some(committee),
                    Vec::new(),
                );
                for n in 1..=3 {
                    let id = establish(
                        &mut self.rng,
                        format!("{district}第{general}党总支第{n}支部"),
                        BranchKind::Branch,
                        district,
                        Some(general_id),
                        Vec::new(),
                    );
                    homes.push(id);
                }
            }
            for n in 1..=10 {
                let firm = format!("{}{}", pick(&mut self.rng, &FIRMS), pick(&mut self.rng, &TRADES));
                let id = establish(
                    &mut self.rng,
                    format!("{firm}党支部{n}"),
                    BranchKind::Branch,
                    district,
                    Some(committee),
                    vec![firm],
                );
                homes.push(id);
            }
            for n in 1..=2 {
                let organizations: Vec<String> = (0..3 + self.rng.random_range(0..4))
                    .map(|_| format!("{}{}", pick(&mut self.rng, &FIRMS), pick(&mut self.rng, &TRADES)))
                    .collect();
                let id = establish(
                    &mut self.rng,
                    format!("{district}小微企业第{n}联合党支部"),
                    BranchKind::JointBranch,
                    district,
                    Some(committee),
                    organizations,
                );
                homes.push(id);
            }
        }
        self.report.branches = writes.len();
        // Some branches are large, most small: weights give the first branches of each kind more.
        self.homes = homes.into_iter().enumerate().map(|(i, id)| (id, 1 + (i % 7) * (i % 3))).collect();
        self.submit(writes).await;
    }

    fn home_branch(&mut self) -> BranchId {
        let total: usize = self.homes.iter().map(|(_, weight)| weight).sum();
        let mut ticket = self.rng.random_range(0..total);
        for (id, weight) in &self.homes {
            if ticket < *weight {
                return *id;
            }
            ticket -= weight;
        }
        self.homes[0].0
    }

    fn other_branch(&mut self, not: Option<BranchId>) -> BranchId {
        loop {
            let candidate = self.home_branch();
            if Some(candidate) != not {
                return candidate;
            }
        }
    }

    fn register(&mut self, day: i64, writes: &mut Vec<(String, Value)>) {
        let at = self.moment(day);
        let id = MemberId::new_v7(at, self.rng.random::<[u8; 10]>());
        let probationary = chance(&mut self.rng, 0.12);
        let status = if probationary { MemberStatus::Probationary } else { MemberStatus::Full };
        let branch = self.home_branch();
        let name = chinese_name(&mut self.rng);
        writes.push((
            "members".into(),
            json!({"member_id": id, "name": name, "branch_id": branch, "status": status, "effective_at": at.to_rfc3339()}),
        ));
        self.members.push(id);
        let verify_after = 1 + self.rng.random_range(0..20) as i64;
        self.plan(day + verify_after, Planned::Verify(id));
        if probationary {
            let probation_days = 365 + self.rng.random_range(0..30) as i64;
            self.plan(day + probation_days, Planned::Confirm(id));
        }
    }

    /// Writes a planned follow-up if the member is still in a state it applies to.
    fn follow_up(
        &mut self,
        day: i64,
        planned: Planned,
        touched: &mut HashSet<MemberId>,
        writes: &mut Vec<(String, Value)>,
    ) {
        let member_id = match planned {
            Planned::Verify(m)
            | Planned::Confirm(m)
            | Planned::Complete(m, _)
            | Planned::Cancel(m, _)
            | Planned::Arrive(m, _)
            | Planned::Return(m)
            | Planned::Restore(m)
            | Planned::Place(m) => m,
        };
        if !touched.insert(member_id) {
            // One write per member a day keeps effective times in order; try tomorrow.
            self.plan(day + 1, planned);
            return;
        }
        let at = self.moment(day).to_rfc3339();
        let placement_branch = self.home_branch();
        let projections = self.state.live.read();
        let Some(member) = projections.world().member(member_id).filter(|m| !m.status.is_final()) else {
            return;
        };
        let open =
            |transfer: TransferId| member.open_transfer.as_ref().is_some_and(|o| o.transfer_id == transfer);
        let write = match planned {
            Planned::Verify(_) if !member.verified => {
                Some((format!("members/{member_id}/verify"), json!({})))
            }
            Planned::Confirm(_) if member.status == MemberStatus::Probationary => Some((
                format!("members/{member_id}/status"),
                json!({"to": "full", "reason": "预备期满，支部大会讨论通过转为正式党员"}),
            )),
            Planned::Complete(_, transfer) if open(transfer) => {
                Some((format!("transfers/{transfer}/complete"), json!({})))
            }
            Planned::Cancel(_, transfer) if open(transfer) => Some((
                format!("transfers/{transfer}/cancel"),
                json!({"reason": "工作单位变动，本人申请暂缓转接"}),
            )),
            Planned::Arrive(_, branch) if member.mobile.is_some() && member.branch_id != Some(branch) => {
                Some((format!("members/{member_id}/arrivals"), json!({"inflow_branch_id": branch})))
            }
            Planned::Return(_) if member.mobile.is_some() => {
                Some((format!("members/{member_id}/returns"), json!({})))
            }
            Planned::Restore(_) if member.contact_lost_since.is_some() => Some((
                format!("members/{member_id}/contact"),
                json!({"lost": false, "reason": "经社区走访恢复联系"}),
            )),
            Planned::Place(_) if member.pocket.is_some() && member.open_transfer.is_none() => {
                Some((format!("members/{member_id}/placement"), json!({"branch_id": placement_branch})))
            }
            _ => None,
        };
        if let Some((op, mut body)) = write {
            body["effective_at"] = json!(at);
            writes.push((op, body));
        }
    }

    /// The day's unplanned events, on members picked at random.
    fn daily_events(&mut self, day: i64, touched: &mut HashSet<MemberId>, writes: &mut Vec<(String, Value)>) {
        // Per member and year: letters 7 %, departures 8 %, lost contact 1 %, leaving 0.5 %,
        // deaths 0.3 %, suspensions 0.2 %.
        let per_day = self.members.len() as f64 / 365.0;
        let letters = self.quota(per_day * 0.07);
        let departures = self.quota(per_day * 0.08);
        let lost = self.quota(per_day * 0.01);
        let left = self.quota(per_day * 0.005);
        let deaths = self.quota(per_day * 0.003);
        let suspensions = self.quota(per_day * 0.002);
        for _ in 0..letters {
            self.with_settled_member(day, touched, writes, Self::issue_letter);
        }
        for _ in 0..departures {
            self.with_settled_member(day, touched, writes, Self::depart);
        }
        for _ in 0..lost {
            self.with_settled_member(day, touched, writes, |story, day, member, _| {
                if chance(&mut story.rng, 0.6) {
                    let after = 30 + story.rng.random_range(0..170) as i64;
                    story.plan(day + after, Planned::Restore(member));
                }
                Some((format!("members/{member}/contact"), json!({"lost": true, "reason": "多次联系未果"})))
            });
        }
        for (count, to, reason) in [
            (left, "left", "本人申请退党，支部大会讨论同意"),
            (deaths, "deceased", "因病去世"),
            (suspensions, "suspended", "停止党籍"),
        ] {
            for _ in 0..count {
                self.with_settled_member(day, touched, writes, |_, _, member, _| {
                    Some((format!("members/{member}/status"), json!({"to": to, "reason": reason})))
                });
            }
        }
        // Surveys of small firms find people in nobody's books, now and then.
        if chance(&mut self.rng, self.members.len() as f64 / 200.0 / DAYS as f64 * 3.0) {
            let at = self.moment(day);
            let id = MemberId::new_v7(at, self.rng.random::<[u8; 10]>());
            let source = if chance(&mut self.rng, 0.8) { "survey" } else { "self_declared" };
            let district = *pick(&mut self.rng, &DISTRICTS);
            let firm = format!("{}{}", pick(&mut self.rng, &FIRMS), pick(&mut self.rng, &TRADES));
            let name = chinese_name(&mut self.rng);
            writes.push((
                "pocket-members".into(),
                json!({"source": source, "name": name, "new_member_id": id, "found_region": district,
                       "found_organization": firm, "effective_at": at.to_rfc3339()}),
            ));
            touched.insert(id);
            self.members.push(id);
            if chance(&mut self.rng, 0.7) {
                self.placed_or_planned.insert(id);
                let after = 10 + self.rng.random_range(0..50) as i64;
                self.plan(day + after, Planned::Place(id));
            }
        }
    }

    /// Picks an active, verified member with a home, no open letter, not mobile and in contact
    /// (a few tries), and writes what `write` makes of them.
    fn with_settled_member(
        &mut self,
        day: i64,
        touched: &mut HashSet<MemberId>,
        writes: &mut Vec<(String, Value)>,
        write: impl FnOnce(&mut Self, i64, MemberId, BranchId) -> Option<(String, Value)>,
    ) {
        for _ in 0..8 {
            let member = *pick(&mut self.rng, &self.members);
            if touched.contains(&member) {
                continue;
            }
            let home = {
                let projections = self.state.live.read();
                projections
                    .world()
                    .member(member)
                    .filter(|m| {
                        // Suspended members are left alone: no letters, travel or further changes.
                        !m.status.is_final()
                            && m.status != MemberStatus::Suspended
                            && m.open_transfer.is_none()
                            && m.mobile.is_none()
                            && m.pocket.is_none()
                            && m.contact_lost_since.is_none()
                            && m.verified
                    })
                    .and_then(|m| m.branch_id)
            };
            let Some(home) = home else { continue };
            touched.insert(member);
            let at = self.moment(day);
            if let Some((op, mut body)) = write(self, day, member, home) {
                body["effective_at"] = json!(at.to_rfc3339());
                writes.push((op, body));
            }
            return;
        }
    }

    /// A letter: mostly handed in within weeks, some cancelled, a few never handed in (they
    /// expire into pocket members), a few to organisations outside the system.
    fn issue_letter(&mut self, day: i64, member: MemberId, home: BranchId) -> Option<(String, Value)> {
        let at = self.start + TimeDelta::days(day);
        let transfer = TransferId::new_v7(at, self.rng.random::<[u8; 10]>());
        let valid_days = 90;
        let valid_until = (at + TimeDelta::days(valid_days)).to_rfc3339();
        let letter_no = format!("京组转〔{}〕{:04}号", at.year(), self.rng.random_range(0..10_000));
        let mut body = json!({"transfer_id": transfer, "letter_no": letter_no, "valid_until": valid_until});
        if chance(&mut self.rng, 0.06) {
            body["to_external"] = json!(format!("{}党委", pick(&mut self.rng, &DESTINATIONS)));
        } else {
            body["to_branch_id"] = json!(self.other_branch(Some(home)));
        }
        let fate = self.rng.random_range(0..100);
        if fate < 82 {
            let after = 3 + self.rng.random_range(0..45) as i64;
            self.plan(day + after, Planned::Complete(member, transfer));
        } else if fate < 92 {
            let after = 2 + self.rng.random_range(0..20) as i64;
            self.plan(day + after, Planned::Cancel(member, transfer));
        }
        // Otherwise never handed in: the weekly sweep expires it after 90 days.
        Some((format!("members/{member}/transfers"), body))
    }

    /// A departure: most go to another city and report nowhere in the system; some move within
    /// the city and report at a branch here; most come back within a year.
    fn depart(&mut self, day: i64, member: MemberId, home: BranchId) -> Option<(String, Value)> {
        let mut body = json!({"certificate_no": format!("流动{:06}", self.rng.random_range(0..1_000_000))});
        if chance(&mut self.rng, 0.35) {
            let inflow = self.other_branch(Some(home));
            body["destination_region"] = json!(format!("北京市{}", pick(&mut self.rng, &DISTRICTS)));
            body["inflow_branch_id"] = json!(inflow);
            let after = 3 + self.rng.random_range(0..40) as i64;
            self.plan(day + after, Planned::Arrive(member, inflow));
        } else {
            body["destination_region"] = json!(pick(&mut self.rng, &DESTINATIONS));
            body["destination_organization"] =
                json!(format!("{}{}", pick(&mut self.rng, &FIRMS), pick(&mut self.rng, &TRADES)));
        }
        let away = 60 + self.rng.random_range(0..360) as i64;
        body["expected_return"] = json!((self.start + TimeDelta::days(day + away)).to_rfc3339());
        if chance(&mut self.rng, 0.8) {
            let jitter = self.rng.random_range(0..60) as i64;
            self.plan(day + away + jitter, Planned::Return(member));
        }
        Some((format!("members/{member}/departures"), body))
    }

    fn reclassify_the_largest_branch(&mut self, day: i64, writes: &mut Vec<(String, Value)>) {
        let at = self.moment(day).to_rfc3339();
        let largest = self
            .state
            .live
            .read()
            .branches()
            .into_iter()
            .filter(|b| b.kind == BranchKind::Branch)
            .max_by_key(|b| b.full_count);
        if let Some(branch) = largest {
            writes.push((
                format!("branches/{}/reclassify", branch.branch_id),
                json!({"kind": "general_branch", "effective_at": at}),
            ));
        }
    }

    /// Runs a day's writes in order, each on its own, through the API's path; waits for all.
    async fn submit(&mut self, writes: Vec<(String, Value)>) {
        let mut answers = Vec::with_capacity(writes.len());
        for (op, body) in writes {
            let queued =
                writes::queue(self.state, Principal::local(), &op, body.to_string().as_bytes()).await;
            answers.push((op, queued));
        }
        for (op, queued) in answers {
            let answer = match queued {
                Ok(receiver) => receiver
                    .await
                    .unwrap_or_else(|_| Err(ApiError::internal("demo", "the processor stopped"))),
                Err(error) => Err(error),
            };
            match answer {
                Ok(_) => self.report.writes += 1,
                Err(error) => self.report.refused.push((op, error.code.to_owned(), error.message)),
            }
        }
    }

    /// The expiry sweep as of the end of `day`; plans placements for half the new pocket members.
    async fn sweep(&mut self, day: i64) {
        let now = self.start + TimeDelta::days(day + 1);
        match self.state.processor.sweep(now).await {
            Ok(expired) => self.report.expired += expired,
            Err(error) => {
                self.report.refused.push(("sweeps/expiry".into(), error.code.to_owned(), error.message))
            }
        }
        let pocket: Vec<MemberId> = {
            let projections = self.state.live.read();
            let mut pocket: Vec<MemberId> = projections
                .world()
                .members()
                .filter(|m| m.pocket.is_some() && !self.placed_or_planned.contains(&m.member_id))
                .map(|m| m.member_id)
                .collect();
            pocket.sort();
            pocket
        };
        for member in pocket {
            self.placed_or_planned.insert(member);
            if chance(&mut self.rng, 0.5) {
                let after = 20 + self.rng.random_range(0..100) as i64;
                self.plan(day + after, Planned::Place(member));
            }
        }
    }

    /// A few corrections: the latest event of some members was entered by mistake.
    async fn retract_a_few(&mut self) {
        let mut writes = Vec::new();
        let mut chosen = HashSet::new();
        for _ in 0..(self.members.len() / 2_000).max(3) {
            let member = *pick(&mut self.rng, &self.members);
            if !chosen.insert(member) {
                continue;
            }
            let Ok(history) = self.state.live.member_history(member, None) else { continue };
            let Some(latest) = history.last() else { continue };
            let kind = latest.envelope.event_type.as_str();
            if latest.retracted
                || matches!(kind, "event_retracted" | "member_reassigned" | "member_registered")
            {
                continue;
            }
            // At the story's end, not now: the same seed then gives the same log.
            let at = (self.start + TimeDelta::days(DAYS)).to_rfc3339();
            writes.push((
                format!("events/{}/retract", latest.envelope.position),
                json!({"reason": "录入有误，予以撤销", "effective_at": at}),
            ));
        }
        let before = self.report.writes;
        self.submit(writes).await;
        self.report.retracted = (self.report.writes - before) as usize;
    }
}
