//! `/openapi.json` and `/docs`: the API described from the code itself. Request bodies, query
//! parameters and answers are the schemas of the very types the handlers parse and serialise
//! (derived with utoipa); this module only says which path takes which, and what each answers.
//! `/docs` is one self-contained page that renders the document in the browser — no network.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use flowbook_projections::{
    BranchRow, Flows, MemberSummary, MemberView, MobileStats, PocketStats, RosterEntry, TransferRow,
};
use flowbook_store::Envelope;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    AllOfBuilder, ArrayBuilder, ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi,
    OpenApiBuilder, Paths, Ref, RefOr, Required, ResponseBuilder, Schema, Type,
};
use utoipa::{IntoParams, ToSchema};

use crate::reads::{
    EventsQuery, FlowsQuery, PeriodQuery, SearchQuery, StreamQuery, TimeQuery, TransfersQuery,
};
use crate::writes::{
    ArrivalBody, CancelBody, Common, ContactBody, DepartureBody, DissolveBody, Empty, EstablishBody,
    PlacementBody, PocketBody, ReclassifyBody, RegisterBody, RetractBody, StatusBody, TransferBody,
};

/// The error codes of API.md, by status.
const ERRORS: [(&str, &str); 7] = [
    ("400", "malformed: not JSON, wrong types, missing fields, bad UUID or time"),
    ("401", "unauthenticated: a valid bearer token is required"),
    ("403", "forbidden: the token's role or branch scope does not allow this"),
    ("404", "not_found: the member, branch, transfer or event named does not exist"),
    ("409", "version_conflict (expected_version) or already_exists (a client-chosen id)"),
    ("413", "too_large: the body is over 1 MiB (imports: 64 MiB)"),
    ("422", "a broken rule: same_branch, branch_dissolved, open_transfer, no_open_transfer, not_mobile, already_mobile, no_home_branch, not_pocket, member_inactive, effective_in_future, effective_before_latest, invalid_transition, successor_required, idempotency_key_reused, already_retracted, invalid_validity, letter_expired, branch_not_established, not_latest, same_actor"),
];

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn array_of(item: RefOr<Schema>) -> RefOr<Schema> {
    ArrayBuilder::new().items(item).build().into()
}

/// `{"<field>": [item, …]}`, the shape of every list answer.
fn list(field: &str, item: RefOr<Schema>) -> RefOr<Schema> {
    ObjectBuilder::new().property(field, array_of(item)).required(field).build().into()
}

fn scalar(kind: Type) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(kind).build().into()
}

fn path_parameter(name: &str, description: &str, kind: Type) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(scalar(kind)))
        .build()
}

/// The `{id}` or `{position}` parameters a path names.
fn path_parameters(path: &str) -> Vec<Parameter> {
    let what = if path.starts_with("/v1/branches") {
        "the branch's id (UUID)"
    } else if path.starts_with("/v1/transfers") {
        "the transfer's id (UUID)"
    } else {
        "the member's id (UUID)"
    };
    let mut parameters = Vec::new();
    if path.contains("{id}") {
        parameters.push(path_parameter("id", what, Type::String));
    }
    if path.contains("{position}") {
        parameters.push(path_parameter("position", "the event's position in the log", Type::Integer));
    }
    parameters
}

fn json_response(description: &str, schema: RefOr<Schema>) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(schema)).build())
        .build()
}

fn with_errors(mut operation: OperationBuilder, statuses: &[&str]) -> OperationBuilder {
    for (status, description) in ERRORS.iter().filter(|(status, _)| statuses.contains(status)) {
        operation = operation.response(*status, json_response(description, reference("Error")));
    }
    operation
}

/// A write: its own body fields plus `effective_at` and `expected_version`; answers 201 with the
/// events appended (and the id created, where one is).
fn write(summary: &str, tag: &str, path: &str, body: &str, created: Option<&str>) -> Operation {
    let body_schema: RefOr<Schema> =
        RefOr::T(Schema::AllOf(AllOfBuilder::new().item(reference(body)).item(reference("Common")).build()));
    let mut answer =
        ObjectBuilder::new().property("events", array_of(reference("Envelope"))).required("events");
    if let Some(field) = created {
        answer = answer
            .property(
                field,
                ObjectBuilder::new().schema_type(Type::String).format(Some(uuid_format())).build(),
            )
            .required(field);
    }
    let operation = OperationBuilder::new()
        .summary(Some(summary))
        .tag(tag)
        .parameters(Some(path_parameters(path)))
        .parameter(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some("the same key and body answer the first answer again and append nothing"))
                .schema(Some(scalar(Type::String)))
                .build(),
        )
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", ContentBuilder::new().schema(Some(body_schema)).build())
                .required(Some(Required::True))
                .build(),
        ))
        .response("201", json_response("appended", answer.build().into()));
    with_errors(operation, &["400", "401", "403", "404", "409", "413", "422"]).build()
}

fn uuid_format() -> utoipa::openapi::SchemaFormat {
    utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid)
}

/// A read answering JSON.
fn read(summary: &str, tag: &str, path: &str, query: Vec<Parameter>, answer: RefOr<Schema>) -> Operation {
    let operation = OperationBuilder::new()
        .summary(Some(summary))
        .tag(tag)
        .parameters(Some(path_parameters(path)))
        .parameters(Some(query))
        .response("200", json_response("the answer", answer));
    with_errors(operation, &["400", "401", "404"]).build()
}

fn query<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

fn text_response(media: &str, description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(media, ContentBuilder::new().schema(Some(scalar(Type::String))).build())
        .build()
}

/// Every path of the API with its operations.
fn operations() -> Vec<(&'static str, HttpMethod, Operation)> {
    use HttpMethod::{Get, Post};
    let time = query::<TimeQuery>;
    let history_answer = list(
        "events",
        RefOr::T(Schema::AllOf(
            AllOfBuilder::new()
                .item(reference("Envelope"))
                .item(ObjectBuilder::new().property("retracted", scalar(Type::Boolean)))
                .build(),
        )),
    );
    let roster_answer = ObjectBuilder::new()
        .property("branch_id", ObjectBuilder::new().schema_type(Type::String).format(Some(uuid_format())))
        .property("as_of", scalar(Type::String))
        .property("known_at", scalar(Type::String))
        .property("members", array_of(reference("RosterEntry")))
        .required("members")
        .build()
        .into();
    let import_answer = ObjectBuilder::new()
        .property("accepted", scalar(Type::Integer))
        .property(
            "rejected",
            array_of(
                ObjectBuilder::new()
                    .property("line", scalar(Type::Integer))
                    .property("error", reference("ErrorDetail"))
                    .build()
                    .into(),
            ),
        )
        .build()
        .into();
    let verify_answer = ObjectBuilder::new()
        .property("ok", scalar(Type::Boolean))
        .property("checked", scalar(Type::Integer))
        .property("first_bad_position", scalar(Type::Integer))
        .build()
        .into();
    let health_answer = ObjectBuilder::new()
        .property("ok", scalar(Type::Boolean))
        .property("position", scalar(Type::Integer))
        .build()
        .into();
    let sweep = with_errors(
        OperationBuilder::new().summary(Some("expire overdue letters now (admin)")).tag("writes").response(
            "200",
            json_response(
                "how many letters expired",
                ObjectBuilder::new().property("expired", scalar(Type::Integer)).build().into(),
            ),
        ),
        &["401", "403"],
    )
    .build();
    let import = with_errors(
        OperationBuilder::new()
            .summary(Some(
                "bulk writes: NDJSON, one {\"op\": \"<path after /v1/>\", \"body\": {…}} a line, each on its own",
            ))
            .tag("writes")
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/x-ndjson", ContentBuilder::new().schema(Some(scalar(Type::String))).build())
                    .build(),
            ))
            .response("200", json_response("accepted count and rejected lines (numbered from 1)", import_answer)),
        &["401", "413"],
    )
    .build();
    let stream = with_errors(
        OperationBuilder::new()
            .summary(Some("the log live as Server-Sent Events, resumable with Last-Event-ID"))
            .tag("audit")
            .parameters(Some(query::<StreamQuery>()))
            .response("200", text_response("text/event-stream", "one `event` per envelope, `id` = position"))
            .response("503", json_response("too many open streams", reference("Error"))),
        &["401"],
    )
    .build();
    let plain = |summary: &str, media: &str| {
        OperationBuilder::new()
            .summary(Some(summary))
            .tag("operations")
            .response("200", text_response(media, summary))
            .build()
    };
    vec![
        ("/v1/branches", Post, write("establish a branch", "branches", "/v1/branches", "EstablishBody", Some("branch_id"))),
        ("/v1/branches", Get, read("every branch with counts and flags", "branches", "/v1/branches", vec![], list("branches", reference("BranchRow")))),
        ("/v1/branches/{id}", Get, read("one branch", "branches", "/v1/branches/{id}", vec![], reference("BranchRow"))),
        ("/v1/branches/{id}/reclassify", Post, write("reclassify a branch", "branches", "/v1/branches/{id}/reclassify", "ReclassifyBody", None)),
        ("/v1/branches/{id}/dissolve", Post, write("dissolve a branch (its members move to the successor)", "branches", "/v1/branches/{id}/dissolve", "DissolveBody", None)),
        ("/v1/branches/{id}/roster", Get, read("a branch's roster, now or as of / as known at", "branches", "/v1/branches/{id}/roster", time(), roster_answer)),
        ("/v1/members", Post, write("register a member", "members", "/v1/members", "RegisterBody", Some("member_id"))),
        ("/v1/members", Get, read("search by name (substring) or id", "members", "/v1/members", query::<SearchQuery>(), list("members", reference("MemberSummary")))),
        ("/v1/members/{id}", Get, read("a member, now or as of / as known at", "members", "/v1/members/{id}", time(), reference("MemberView"))),
        ("/v1/members/{id}/history", Get, read("a member's events in stream order, retracted ones marked", "members", "/v1/members/{id}/history", time(), history_answer)),
        ("/v1/members/{id}/verify", Post, write("verify a registration (a second person)", "members", "/v1/members/{id}/verify", "Empty", None)),
        ("/v1/members/{id}/transfers", Post, write("issue a letter to a branch or an outside organisation", "transfers", "/v1/members/{id}/transfers", "TransferBody", Some("transfer_id"))),
        ("/v1/members/{id}/departures", Post, write("a mobile member leaves", "mobile", "/v1/members/{id}/departures", "DepartureBody", None)),
        ("/v1/members/{id}/arrivals", Post, write("a mobile member reports at the inflow branch", "mobile", "/v1/members/{id}/arrivals", "ArrivalBody", None)),
        ("/v1/members/{id}/returns", Post, write("a mobile member is back", "mobile", "/v1/members/{id}/returns", "Empty", None)),
        ("/v1/members/{id}/placement", Post, write("place a pocket member in a branch", "pocket", "/v1/members/{id}/placement", "PlacementBody", None)),
        ("/v1/members/{id}/contact", Post, write("contact lost or restored", "members", "/v1/members/{id}/contact", "ContactBody", None)),
        ("/v1/members/{id}/status", Post, write("change a member's status", "members", "/v1/members/{id}/status", "StatusBody", None)),
        ("/v1/transfers", Get, read("letters in one state (open includes overdue)", "transfers", "/v1/transfers", query::<TransfersQuery>(), list("transfers", reference("TransferRow")))),
        ("/v1/transfers/{id}/complete", Post, write("the letter is handed in (or its receipt recorded)", "transfers", "/v1/transfers/{id}/complete", "Empty", None)),
        ("/v1/transfers/{id}/cancel", Post, write("cancel a letter", "transfers", "/v1/transfers/{id}/cancel", "CancelBody", None)),
        ("/v1/pocket-members", Post, write("discovery of a pocket member, known or unknown", "pocket", "/v1/pocket-members", "PocketBody", Some("member_id"))),
        ("/v1/events", Get, read("the log in position order", "audit", "/v1/events", query::<EventsQuery>(), list("events", reference("Envelope")))),
        ("/v1/events/stream", Get, stream),
        ("/v1/events/{position}/retract", Post, write("retract a member's latest event (admin)", "audit", "/v1/events/{position}/retract", "RetractBody", None)),
        ("/v1/sweeps/expiry", Post, sweep),
        ("/v1/import", Post, import),
        ("/v1/stats/flows", Get, read("transfers in and out, departures, arrivals and the origin → destination matrix for [from, to)", "statistics", "/v1/stats/flows", query::<FlowsQuery>(), reference("Flows"))),
        ("/v1/stats/mobile", Get, read("mobile members now", "statistics", "/v1/stats/mobile", vec![], reference("MobileStats"))),
        ("/v1/stats/pocket", Get, read("pocket members discovered and placed in [from, to)", "statistics", "/v1/stats/pocket", query::<PeriodQuery>(), reference("PocketStats"))),
        ("/v1/audit/verify", Get, read("recompute every checksum and the hash chain", "audit", "/v1/audit/verify", vec![], verify_answer)),
        ("/healthz", Get, read("alive, and the read models' position (no token needed)", "operations", "/healthz", vec![], health_answer)),
        ("/metrics", Get, plain("Prometheus metrics", "text/plain")),
        ("/openapi.json", Get, plain("this document (no token needed)", "application/json")),
        ("/docs", Get, plain("this document as a page (no token needed, no network)", "text/html")),
    ]
}

/// The error shape every failure answers with.
fn error_schemas() -> [(&'static str, RefOr<Schema>); 2] {
    let detail = ObjectBuilder::new()
        .property("code", scalar(Type::String))
        .property("message", scalar(Type::String))
        .required("code")
        .required("message")
        .build();
    let error = ObjectBuilder::new().property("error", reference("ErrorDetail")).required("error").build();
    [("ErrorDetail", detail.into()), ("Error", error.into())]
}

/// A type's schema and those of every type it names.
fn collect<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// The whole document.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for (path, method, operation) in operations() {
        paths.add_path_operation(path, vec![method], operation);
    }
    let mut schemas = Vec::new();
    collect::<Common>(&mut schemas);
    collect::<Empty>(&mut schemas);
    collect::<EstablishBody>(&mut schemas);
    collect::<ReclassifyBody>(&mut schemas);
    collect::<DissolveBody>(&mut schemas);
    collect::<RegisterBody>(&mut schemas);
    collect::<TransferBody>(&mut schemas);
    collect::<CancelBody>(&mut schemas);
    collect::<DepartureBody>(&mut schemas);
    collect::<ArrivalBody>(&mut schemas);
    collect::<PocketBody>(&mut schemas);
    collect::<PlacementBody>(&mut schemas);
    collect::<ContactBody>(&mut schemas);
    collect::<StatusBody>(&mut schemas);
    collect::<RetractBody>(&mut schemas);
    collect::<Envelope>(&mut schemas);
    collect::<MemberView>(&mut schemas);
    collect::<MemberSummary>(&mut schemas);
    collect::<BranchRow>(&mut schemas);
    collect::<RosterEntry>(&mut schemas);
    collect::<TransferRow>(&mut schemas);
    collect::<Flows>(&mut schemas);
    collect::<MobileStats>(&mut schemas);
    collect::<PocketStats>(&mut schemas);
    let mut components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    for (name, schema) in error_schemas() {
        components = components.schema(name, schema);
    }
    let mut document = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("flowbook")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "An event-sourced tracker of where an organisation's members are. Every write appends \
                     immutable events; every read is a projection of the log, now or as of an effective \
                     time (`as_of`) as known at a recorded time (`known_at`). Tokens go in \
                     `Authorization: Bearer <token>` (none in local mode).",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build();
    document.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    document
}

pub async fn json() -> Response {
    Json(document()).into_response()
}

pub async fn docs() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], Html(include_str!("docs.html"))).into_response()
}
