//! `flowbook export`: the log as NDJSON, and rosters, flows and the mobile-member ledger as CSV
//! that spreadsheet programs open with Chinese names intact (UTF-8 with a byte-order mark).

use std::io::Write;

use chrono::{DateTime, Utc};
use flowbook_core::BranchId;
use flowbook_projections::flags::member_flags;
use flowbook_projections::{At, FlowGrouping, Live};

/// The byte-order mark that tells spreadsheet programs a CSV file is UTF-8.
pub const UTF8_BOM: &str = "\u{feff}";

/// Events read from the log per page while exporting.
const EXPORT_PAGE_EVENTS: usize = 10_000;

/// One CSV field, quoted when it has to be (RFC 4180).
fn field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

fn row(out: &mut dyn Write, fields: &[String]) -> std::io::Result<()> {
    let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
    writeln!(out, "{}", line.join(","))
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

/// Every event, one envelope per line, in position order.
pub fn events_ndjson(live: &Live, out: &mut dyn Write) -> Result<u64, String> {
    let mut after = 0;
    let mut written = 0;
    loop {
        let page = live.store().read_log(after, EXPORT_PAGE_EVENTS).map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { return Ok(written) };
        after = last.position;
        for envelope in &page {
            let line = serde_json::to_string(envelope).map_err(|e| e.to_string())?;
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            written += 1;
        }
    }
}

pub fn roster_csv(live: &Live, branch: BranchId, at: &At, out: &mut dyn Write) -> Result<u64, String> {
    let members = live.read().roster(branch, at).ok_or("no such branch")?;
    write!(out, "{UTF8_BOM}").map_err(|e| e.to_string())?;
    let header = ["member_id", "name", "status", "relation", "since"].map(String::from);
    row(out, &header).map_err(|e| e.to_string())?;
    for entry in &members {
        let status = serde_json::to_value(entry.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let relation = serde_json::to_value(entry.relation)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        row(
            out,
            &[entry.member_id.to_string(), entry.name.clone(), status, relation, time(Some(entry.since))],
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(members.len() as u64)
}

pub fn flows_csv(
    live: &Live,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    by: FlowGrouping,
    out: &mut dyn Write,
) -> Result<u64, String> {
    let flows = live.read().flows(from, to, by, None);
    write!(out, "{UTF8_BOM}").map_err(|e| e.to_string())?;
    let header = ["key", "transfers_in", "transfers_out", "net", "departures", "arrivals"].map(String::from);
    row(out, &header).map_err(|e| e.to_string())?;
    for r in &flows.rows {
        let fields = [
            r.key.clone(),
            r.transfers_in.to_string(),
            r.transfers_out.to_string(),
            r.net.to_string(),
            r.departures.to_string(),
            r.arrivals.to_string(),
        ];
        row(out, &fields).map_err(|e| e.to_string())?;
    }
    Ok(flows.rows.len() as u64)
}

/// The ledger (台账) of mobile members now: who is away, from which branch, where, since when,
/// whether they reported, and their flags.
pub fn ledger_csv(live: &Live, now: DateTime<Utc>, out: &mut dyn Write) -> Result<u64, String> {
    let projections = live.read();
    let world = projections.world();
    let branch_name =
        |id: Option<BranchId>| id.and_then(|id| world.branch(id)).map(|b| b.name.clone()).unwrap_or_default();
    let mut mobile: Vec<_> = world.members().filter(|m| m.mobile.is_some()).collect();
    mobile.sort_by(|a, b| (&a.branch_id, &a.name).cmp(&(&b.branch_id, &b.name)));
    write!(out, "{UTF8_BOM}").map_err(|e| e.to_string())?;
    let header = [
        "member_id",
        "name",
        "home_branch",
        "destination_region",
        "destination_organization",
        "inflow_branch",
        "departed_at",
        "reported_at",
        "certificate_no",
        "expected_return",
        "flags",
    ]
    .map(String::from);
    row(out, &header).map_err(|e| e.to_string())?;
    for member in &mobile {
        let away = member.mobile.as_ref().expect("filtered");
        let flags = member_flags(member, now, projections.config()).join(" ");
        let fields = [
            member.member_id.to_string(),
            member.name.to_string(),
            branch_name(member.branch_id),
            away.destination_region.clone(),
            away.destination_organization.clone().unwrap_or_default(),
            branch_name(away.inflow_branch_id.or(away.planned_inflow_branch_id)),
            time(Some(away.departed_at)),
            time(away.arrived_at),
            away.certificate_no.clone().unwrap_or_default(),
            time(away.expected_return),
            flags,
        ];
        row(out, &fields).map_err(|e| e.to_string())?;
    }
    Ok(mobile.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(field("张三"), "张三");
        assert_eq!(field("甲公司, 乙协会"), "\"甲公司, 乙协会\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
