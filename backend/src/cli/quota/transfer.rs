//! `tollgate quota export` and `tollgate quota import`: policies as JSON
//! or CSV files.
//!
//! Both formats carry the same fields per policy: `kind`, `identifier`,
//! `monthly_limit`, `daily_limit`, `daily_burst`, `monthly_enforcement`,
//! `daily_enforcement`, `warning_thresholds` and `enabled`. Amounts are
//! written in the shortest exact form (`225M`), so export, delete, import
//! and export again gives the same file. Timestamps are not exported: an
//! import sets them to the time of the import.
//!
//! Import is all or nothing. Every row is validated first, including
//! conflicts with stored policies. If any row is invalid, nothing is
//! applied, and each bad row is listed with its line number and the fix. The accepted
//! rows are then written in one store transaction with their audit
//! entries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tollgate_protocol::check::PolicyKind;
use tollgate_quota::policy::{enforcement_name, normalize_identifier, policy_kind_name};
use tollgate_quota::{
    BurstPercent, Policy, WarningThresholds, format_amount, parse_amount, parse_enforcement,
    parse_policy_kind, validate_group_name,
};

use super::settings::{describe_limits, parse_burst_arg};
use super::{audit_entry, describe_key, open_existing_store, open_store, parse_kind_arg};
use crate::cli::{DeploymentArgs, StoreArgs, identity, output, user_error};
use crate::store::{AuditEntry, PolicyChange, PolicyKey, Store, StoreError};

/// The version of the JSON export format.
const FORMAT_VERSION: u32 = 1;

/// The columns of the CSV format, in export order.
const COLUMNS: [&str; 9] = [
    "kind",
    "identifier",
    "monthly_limit",
    "daily_limit",
    "daily_burst",
    "monthly_enforcement",
    "daily_enforcement",
    "warning_thresholds",
    "enabled",
];

/// The columns a CSV file must have; the others take their defaults.
const REQUIRED_COLUMNS: [&str; 3] = ["kind", "identifier", "monthly_limit"];

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// Picks the format from `--format` or else the file's extension.
    fn resolve(given: Option<Format>, path: Option<&Path>) -> anyhow::Result<Format> {
        if let Some(format) = given {
            return Ok(format);
        }
        let Some(path) = path else {
            return Ok(Format::Json);
        };
        let extension = path
            .extension()
            .and_then(|extension| extension.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            _ => Err(user_error(format!(
                "cannot tell the format of {} from its extension; name it .json or .csv, or add \
                 --format json or --format csv",
                path.display()
            ))),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The file to write (.json or .csv); it is replaced if it exists.
    #[arg(
        value_name = "FILE",
        required_unless_present = "stdout",
        conflicts_with = "stdout"
    )]
    file: Option<PathBuf>,
    /// Write to stdout instead of a file.
    #[arg(long)]
    stdout: bool,
    /// The format [default: from the file extension; JSON on stdout].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Only policies of this kind: user, group or default.
    #[arg(long = "type", value_name = "KIND", value_parser = parse_kind_arg)]
    kind: Option<PolicyKind>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file to read (.json or .csv).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The format [default: from the file extension].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Only import rows of this kind: user, group or default; other rows
    /// are skipped.
    #[arg(long = "type", value_name = "KIND", value_parser = parse_kind_arg)]
    kind: Option<PolicyKind>,
    /// Keep a stored policy that differs from its row.
    #[arg(long, conflicts_with = "update")]
    skip_existing: bool,
    /// Replace a stored policy that differs from its row.
    #[arg(long)]
    update: bool,
    /// Print what would be created, updated and skipped, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Derive the daily limit of rows without one from their monthly limit.
    #[arg(long)]
    auto_daily: bool,
    /// The burst of daily limits derived by --auto-daily, 5 to 25 [default: 10].
    #[arg(long, value_name = "PERCENT", value_parser = parse_burst_arg, requires = "auto_daily")]
    burst: Option<BurstPercent>,
    #[command(flatten)]
    deployment: DeploymentArgs,
    #[command(flatten)]
    store: StoreArgs,
}

/// One policy as the export formats write it.
#[derive(Debug, Serialize)]
struct ExportRow {
    kind: &'static str,
    identifier: String,
    monthly_limit: String,
    daily_limit: Option<String>,
    daily_burst: Option<u8>,
    monthly_enforcement: &'static str,
    daily_enforcement: &'static str,
    warning_thresholds: Vec<u8>,
    enabled: bool,
}

impl ExportRow {
    fn of(policy: &Policy) -> Self {
        ExportRow {
            kind: policy_kind_name(policy.kind),
            identifier: policy.identifier.clone(),
            monthly_limit: format_amount(policy.monthly_limit),
            daily_limit: policy.daily_limit.map(format_amount),
            daily_burst: policy.daily_burst.map(BurstPercent::percent),
            monthly_enforcement: enforcement_name(policy.monthly_enforcement),
            daily_enforcement: enforcement_name(policy.daily_enforcement),
            warning_thresholds: policy.warning_thresholds.as_slice().to_vec(),
            enabled: policy.enabled,
        }
    }

    /// Returns the CSV cells in [`COLUMNS`] order.
    fn csv_cells(&self) -> [String; 9] {
        let thresholds: Vec<String> = self.warning_thresholds.iter().map(u8::to_string).collect();
        [
            self.kind.to_owned(),
            self.identifier.clone(),
            self.monthly_limit.clone(),
            self.daily_limit.clone().unwrap_or_default(),
            self.daily_burst
                .map(|burst| burst.to_string())
                .unwrap_or_default(),
            self.monthly_enforcement.to_owned(),
            self.daily_enforcement.to_owned(),
            thresholds.join(","),
            self.enabled.to_string(),
        ]
    }
}

/// The JSON export file.
#[derive(Debug, Serialize)]
struct ExportFile {
    version: u32,
    policies: Vec<ExportRow>,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let format = Format::resolve(args.format, args.file.as_deref())?;
    let (store, _) = open_existing_store(&args.store)?;
    let policies = store.list_policies().await?;
    let rows: Vec<ExportRow> = policies
        .iter()
        .filter(|policy| args.kind.is_none_or(|kind| policy.kind == kind))
        .map(ExportRow::of)
        .collect();
    let count = rows.len();
    let text = match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&ExportFile {
                version: FORMAT_VERSION,
                policies: rows,
            })?;
            text.push('\n');
            text
        }
        Format::Csv => write_csv(&rows)?,
    };
    match &args.file {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write the export file {}", path.display()))?;
            output::line(&format!("Exported {count} policies to {}.", path.display()));
        }
        None => output::raw(&text),
    }
    Ok(())
}

fn write_csv(rows: &[ExportRow]) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(COLUMNS)?;
    for row in rows {
        writer.write_record(row.csv_cells())?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|error| anyhow::anyhow!("cannot finish the CSV text: {error}"))?;
    Ok(String::from_utf8(bytes)?)
}

/// One row read from an import file: its line and its fields as text.
/// Absent fields are missing from the map; JSON `null` is an empty string.
#[derive(Debug)]
struct ImportRow {
    line: u64,
    fields: HashMap<String, String>,
}

/// A row that failed to read or validate.
#[derive(Debug)]
struct RowError {
    line: u64,
    message: String,
}

/// The rows of a file that could be read, and the errors of those that
/// could not.
type ReadRows = (Vec<ImportRow>, Vec<RowError>);

/// Reads the rows of `text`, going on past unreadable rows so that all of
/// them are reported. Fails at once only when the whole file is unusable.
fn read_rows(text: &str, format: Format) -> Result<ReadRows, Vec<RowError>> {
    match format {
        Format::Json => read_json_rows(text),
        Format::Csv => read_csv_rows(text),
    }
}

/// Returns the 1-based line of the byte at `offset` in `text`.
fn line_at(text: &str, offset: usize) -> u64 {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|byte| **byte == b'\n').count() as u64 + 1
}

const JSON_SHAPE: &str = "the file must be a JSON object {\"version\": 1, \"policies\": [...]} \
     (as `tollgate quota export` writes it) or a JSON list of policy objects";

fn read_json_rows(text: &str) -> Result<ReadRows, Vec<RowError>> {
    let whole_file_error = |message: String| vec![RowError { line: 1, message }];
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileShape<'a> {
        version: Option<u32>,
        #[serde(borrow)]
        policies: Vec<&'a RawValue>,
    }

    let trimmed = text.trim_start();
    let items: Vec<&RawValue> = if trimmed.starts_with('[') {
        serde_json::from_str(text).map_err(|error| {
            whole_file_error(format!(
                "the file is not a JSON list of objects ({error}); {JSON_SHAPE}"
            ))
        })?
    } else if trimmed.starts_with('{') {
        let file: FileShape = serde_json::from_str(text).map_err(|error| {
            whole_file_error(format!(
                "the file has the wrong shape ({error}); {JSON_SHAPE}"
            ))
        })?;
        if let Some(version) = file.version
            && version != FORMAT_VERSION
        {
            return Err(whole_file_error(format!(
                "the file has format version {version}, but this tollgate reads version \
                 {FORMAT_VERSION}; export it again with this tollgate"
            )));
        }
        file.policies
    } else {
        return Err(whole_file_error(format!(
            "the file is not JSON; {JSON_SHAPE}"
        )));
    };

    let base = text.as_ptr() as usize;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for item in items {
        // The raw value borrows from `text`, so its address gives its offset.
        let line = line_at(text, item.get().as_ptr() as usize - base);
        match serde_json::from_str::<ObjectEntries>(item.get()) {
            Ok(ObjectEntries { entries, duplicate }) => {
                if let Some((name, value)) = duplicate {
                    errors.push(RowError {
                        line: line_at(text, value.get().as_ptr() as usize - base),
                        message: format!(
                            "the field {name:?} appears more than once in this policy; keep \
                             one {name:?} field"
                        ),
                    });
                    continue;
                }
                let unknown: Vec<&str> = entries
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .filter(|name| !COLUMNS.contains(name))
                    .collect();
                if !unknown.is_empty() {
                    errors.push(RowError {
                        line,
                        message: format!(
                            "unknown field {}; the fields are {}",
                            unknown
                                .iter()
                                .map(|name| format!("{name:?}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                            COLUMNS.join(", ")
                        ),
                    });
                    continue;
                }
                let mut fields = HashMap::new();
                for (name, raw) in entries {
                    let value: serde_json::Value = serde_json::from_str(raw.get())
                        .expect("a value the JSON parser accepted parses again");
                    let text = match value {
                        serde_json::Value::Null => String::new(),
                        serde_json::Value::String(text) => text,
                        serde_json::Value::Array(items) => items
                            .iter()
                            .map(|item| match item {
                                serde_json::Value::String(text) => text.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        other => other.to_string(),
                    };
                    fields.insert(name, text);
                }
                rows.push(ImportRow { line, fields });
            }
            Err(_) => errors.push(RowError {
                line,
                message: "the policy is not a JSON object, such as {\"kind\": \"user\", \
                          \"identifier\": \"ann@example.com\", \"monthly_limit\": \"500M\"}"
                    .to_owned(),
            }),
        }
    }
    Ok((rows, errors))
}

/// The fields of one JSON policy object in file order, and the first field
/// that appears twice. `serde_json` keeps only the last value of a
/// duplicated key, so the object is read entry by entry to catch it.
struct ObjectEntries<'a> {
    entries: Vec<(String, &'a RawValue)>,
    duplicate: Option<(String, &'a RawValue)>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ObjectEntries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
            type Value = ObjectEntries<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut entries: Vec<(String, &'de RawValue)> = Vec::new();
                let mut duplicate = None;
                while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
                    if entries.iter().any(|(seen, _)| *seen == name) {
                        duplicate.get_or_insert((name, value));
                    } else {
                        entries.push((name, value));
                    }
                }
                Ok(ObjectEntries { entries, duplicate })
            }
        }

        deserializer.deserialize_map(EntriesVisitor)
    }
}

fn read_csv_rows(text: &str) -> Result<ReadRows, Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = match reader.headers() {
        Ok(header) => header.iter().map(str::to_owned).collect(),
        Err(error) => {
            return Err(vec![RowError {
                line: 1,
                message: format!("the CSV header cannot be read ({error})"),
            }]);
        }
    };
    let mut errors = Vec::new();
    for (index, name) in header.iter().enumerate() {
        let first = header.iter().position(|column| column == name);
        if first != Some(index) {
            // Report each duplicated column once, at its second appearance.
            if header[..index]
                .iter()
                .filter(|column| *column == name)
                .count()
                == 1
            {
                errors.push(RowError {
                    line: 1,
                    message: format!(
                        "the column {name:?} appears more than once in the header; keep one \
                         {name} column"
                    ),
                });
            }
            continue;
        }
        if !COLUMNS.contains(&name.as_str()) {
            errors.push(RowError {
                line: 1,
                message: format!(
                    "unknown column {name:?}; the columns are {}",
                    COLUMNS.join(",")
                ),
            });
        }
    }
    for name in REQUIRED_COLUMNS {
        if !header.iter().any(|column| column == name) {
            errors.push(RowError {
                line: 1,
                message: format!(
                    "the column {name:?} is missing; the header needs at least {} (all \
                     columns: {})",
                    REQUIRED_COLUMNS.join(","),
                    COLUMNS.join(",")
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = record.position().map_or(0, csv::Position::line);
                let fields = header
                    .iter()
                    .cloned()
                    .zip(record.iter().map(str::to_owned))
                    .collect();
                rows.push(ImportRow { line, fields });
            }
            Err(error) => {
                let line = error.position().map_or(0, csv::Position::line);
                errors.push(RowError {
                    line,
                    message: format!(
                        "the row cannot be read ({error}); give every row one value per \
                         header column"
                    ),
                });
            }
        }
    }
    Ok((rows, errors))
}

/// The action an import takes for one row.
#[derive(Debug)]
enum Step {
    Create(Policy),
    Update { before: Policy, after: Policy },
    Skip(String),
}

/// Reports whether two policies have the same settings: the fields that
/// exports carry, without the timestamps.
pub(super) fn same_settings(a: &Policy, b: &Policy) -> bool {
    a.monthly_limit == b.monthly_limit
        && a.daily_limit == b.daily_limit
        && a.daily_burst == b.daily_burst
        && a.monthly_enforcement == b.monthly_enforcement
        && a.daily_enforcement == b.daily_enforcement
        && a.warning_thresholds == b.warning_thresholds
        && a.enabled == b.enabled
}

/// Builds the policy of one row, or lists what is wrong with it.
fn policy_of(
    row: &ImportRow,
    args: &ImportArgs,
    now: DateTime<Utc>,
) -> Result<Policy, Vec<String>> {
    let field = |name: &str| row.fields.get(name).map(|value| value.trim());
    let mut problems = Vec::new();

    let kind = match field("kind") {
        None | Some("") => {
            problems.push("kind is missing; use user, group or default".to_owned());
            None
        }
        Some(text) => parse_policy_kind(text)
            .map_err(|error| problems.push(error.to_string()))
            .ok(),
    };
    let identifier = match (kind, field("identifier").unwrap_or("")) {
        (None, _) => None,
        (Some(PolicyKind::User), text) => identity::parse_user(text, &args.deployment)
            .map(|identity| identity.to_string())
            .map_err(|message| problems.push(message))
            .ok(),
        (Some(kind), text) => normalize_identifier(kind, text)
            .and_then(|name| {
                if kind == PolicyKind::Group {
                    validate_group_name(&name)?;
                }
                Ok(name)
            })
            .map_err(|error| problems.push(error.to_string()))
            .ok(),
    };
    let monthly = match field("monthly_limit") {
        None | Some("") => {
            problems.push("monthly_limit is missing; give an amount such as 225M".to_owned());
            None
        }
        Some(text) => parse_amount(text)
            .map_err(|error| problems.push(format!("monthly_limit: {error}")))
            .ok(),
    };
    let daily = match field("daily_limit") {
        None | Some("") => Some(None),
        Some(text) => parse_amount(text)
            .map(Some)
            .map_err(|error| {
                problems.push(format!("daily_limit: {error}, or leave it empty for none"))
            })
            .ok(),
    };
    let burst = match field("daily_burst") {
        None | Some("") => Some(None),
        Some(text) => text
            .parse::<BurstPercent>()
            .map(Some)
            .map_err(|error| problems.push(format!("daily_burst: {error}")))
            .ok(),
    };
    let mut enforcement = |name: &str, default| match field(name) {
        None | Some("") => Some(default),
        Some(text) => parse_enforcement(text)
            .map_err(|error| problems.push(format!("{name}: {error}")))
            .ok(),
    };
    let monthly_enforcement = enforcement(
        "monthly_enforcement",
        tollgate_protocol::check::Enforcement::Block,
    );
    let daily_enforcement = enforcement(
        "daily_enforcement",
        tollgate_protocol::check::Enforcement::Alert,
    );
    let thresholds = match field("warning_thresholds") {
        None => Some(WarningThresholds::default()),
        Some(text) => text
            .parse::<WarningThresholds>()
            .map_err(|error| problems.push(format!("warning_thresholds: {error}")))
            .ok(),
    };
    let enabled = match field("enabled").map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("true") | Some("yes") | Some("1") => Some(true),
        Some("false") | Some("no") | Some("0") => Some(false),
        Some(other) => {
            problems.push(format!(
                "enabled: invalid value {other:?}; use true, yes or 1, or false, no or 0"
            ));
            None
        }
    };

    let (
        Some(kind),
        Some(identifier),
        Some(monthly),
        Some(daily),
        Some(burst),
        Some(monthly_enforcement),
        Some(daily_enforcement),
        Some(thresholds),
        Some(enabled),
    ) = (
        kind,
        identifier,
        monthly,
        daily,
        burst,
        monthly_enforcement,
        daily_enforcement,
        thresholds,
        enabled,
    )
    else {
        return Err(problems);
    };
    let mut policy =
        Policy::new(kind, &identifier, monthly, now).map_err(|error| vec![error.to_string()])?;
    policy.daily_limit = daily;
    policy.daily_burst = burst;
    if burst.is_some() && daily.is_none() {
        policy.derive_daily(burst.unwrap_or_default());
    }
    if args.auto_daily && policy.daily_limit.is_none() {
        policy.derive_daily(args.burst.unwrap_or_default());
    }
    policy.monthly_enforcement = monthly_enforcement;
    policy.daily_enforcement = daily_enforcement;
    policy.warning_thresholds = thresholds;
    policy.enabled = enabled;
    policy.validate().map_err(|error| vec![error.to_string()])?;
    Ok(policy)
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let policies = read_import(&args)?;
    let (store, _) = open_store(&args.store)?;
    let plan = plan_import(&args, policies, &store).await?;
    if args.dry_run {
        output::line(&plan.describe_dry_run());
        return Ok(());
    }
    let summary = apply_import(&args, plan, &store).await?;
    output::line(&summary);
    Ok(())
}

/// The changes an import makes, planned against the policies stored when
/// the import read them.
struct ImportPlan {
    /// One line per row, for `--dry-run`.
    lines: Vec<String>,
    /// One [`PolicyChange::Expect`] per row that was compared with a stored
    /// policy, then the writes.
    changes: Vec<PolicyChange>,
    audit: Vec<AuditEntry>,
    created: usize,
    updated: usize,
    skipped: usize,
}

impl ImportPlan {
    fn has_writes(&self) -> bool {
        self.changes
            .iter()
            .any(|change| !matches!(change, PolicyChange::Expect { .. }))
    }

    fn describe_dry_run(&self) -> String {
        let mut lines = self.lines.clone();
        lines.push(format!(
            "Dry run: {} to create, {} to update, {} to skip; nothing was changed.",
            self.created, self.updated, self.skipped
        ));
        lines.join("\n")
    }
}

/// Reads and validates every row of the import file, before the store is
/// opened, and returns each policy with its line number.
fn read_import(args: &ImportArgs) -> anyhow::Result<Vec<(u64, Policy)>> {
    let format = Format::resolve(args.format, Some(&args.file))?;
    let text = std::fs::read_to_string(&args.file).map_err(|error| {
        user_error(format!(
            "cannot read the import file {}: {error}",
            args.file.display()
        ))
    })?;
    let (rows, mut errors) =
        read_rows(&text, format).map_err(|errors| rejection(&args.file, &errors))?;
    let now = Utc::now();

    let mut policies: Vec<(u64, Policy)> = Vec::new();
    let mut seen: HashMap<PolicyKey, u64> = HashMap::new();
    for row in &rows {
        match policy_of(row, args, now) {
            Ok(policy) => {
                let key = PolicyKey::of(&policy);
                if let Some(first) = seen.get(&key) {
                    errors.push(RowError {
                        line: row.line,
                        message: format!(
                            "the {} is also on line {first}; keep one row per policy",
                            describe_key(&key)
                        ),
                    });
                } else {
                    seen.insert(key, row.line);
                    policies.push((row.line, policy));
                }
            }
            Err(problems) => errors.extend(problems.into_iter().map(|message| RowError {
                line: row.line,
                message,
            })),
        }
    }
    if !errors.is_empty() {
        return Err(rejection(&args.file, &errors));
    }
    Ok(policies)
}

/// Compares the validated rows with the stored policies and plans a
/// create, update or skip for each. Every row whose step depends on a
/// stored policy records that policy (or its absence) as a precondition,
/// so that [`apply_import`] fails instead of overwriting a change made
/// after this read.
async fn plan_import(
    args: &ImportArgs,
    policies: Vec<(u64, Policy)>,
    store: &dyn Store,
) -> anyhow::Result<ImportPlan> {
    let stored: HashMap<PolicyKey, Policy> = store
        .list_policies()
        .await?
        .into_iter()
        .map(|policy| (PolicyKey::of(&policy), policy))
        .collect();
    let mut errors = Vec::new();
    let mut preconditions = Vec::new();
    let mut plan: Vec<(u64, PolicyKey, Step)> = Vec::new();
    for (line, policy) in policies {
        let key = PolicyKey::of(&policy);
        if let Some(kind) = args.kind.filter(|kind| *kind != policy.kind) {
            let why = format!("not a {} policy (--type)", policy_kind_name(kind));
            plan.push((line, key, Step::Skip(why)));
            continue;
        }
        let existing = stored.get(&key);
        let step = match existing {
            None => Step::Create(policy),
            Some(existing) if same_settings(existing, &policy) => {
                Step::Skip("unchanged".to_owned())
            }
            Some(_) if args.skip_existing => {
                Step::Skip("exists with other settings (--skip-existing)".to_owned())
            }
            Some(existing) if args.update => {
                let mut after = policy;
                after.created_at = existing.created_at;
                Step::Update {
                    before: existing.clone(),
                    after,
                }
            }
            Some(existing) => {
                errors.push(RowError {
                    line,
                    message: format!(
                        "the {} already exists with other settings ({}); pass --update \
                         to replace it or --skip-existing to keep it",
                        describe_key(&key),
                        describe_limits(existing)
                    ),
                });
                continue;
            }
        };
        preconditions.push(PolicyChange::Expect {
            key: key.clone(),
            current: existing.cloned(),
        });
        plan.push((line, key, step));
    }
    if !errors.is_empty() {
        return Err(rejection(&args.file, &errors));
    }

    let mut import = ImportPlan {
        lines: Vec::new(),
        changes: preconditions,
        audit: Vec::new(),
        created: 0,
        updated: 0,
        skipped: 0,
    };
    let file = args.file.display().to_string();
    for (line, key, step) in plan {
        match step {
            Step::Create(policy) => {
                import.created += 1;
                import.lines.push(format!(
                    "line {line}: create the {}: {}",
                    describe_key(&key),
                    describe_limits(&policy)
                ));
                import.audit.push(audit_entry(
                    "policy.import",
                    key.to_string(),
                    json!({ "file": file, "line": line, "before": null, "after": policy }),
                ));
                import.changes.push(PolicyChange::Put(policy));
            }
            Step::Update { before, after } => {
                import.updated += 1;
                import.lines.push(format!(
                    "line {line}: update the {}: {} (was {})",
                    describe_key(&key),
                    describe_limits(&after),
                    describe_limits(&before)
                ));
                import.audit.push(audit_entry(
                    "policy.import",
                    key.to_string(),
                    json!({ "file": file, "line": line, "before": before, "after": after }),
                ));
                import.changes.push(PolicyChange::Put(after));
            }
            Step::Skip(why) => {
                import.skipped += 1;
                import.lines.push(format!(
                    "line {line}: skip the {}: {why}",
                    describe_key(&key)
                ));
            }
        }
    }
    Ok(import)
}

/// Writes a planned import in one store transaction and returns its
/// summary. If a policy changed since the plan was made, the whole import
/// fails with a user error that names the changed policies.
async fn apply_import(
    args: &ImportArgs,
    plan: ImportPlan,
    store: &dyn Store,
) -> anyhow::Result<String> {
    let file = args.file.display();
    if plan.has_writes() {
        tracing::debug!(
            file = %file,
            changes = plan.changes.len(),
            "applying the planned import"
        );
        match store.apply_policy_changes(&plan.changes, &plan.audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict { changed }) => {
                let listed: Vec<String> = changed.iter().map(ToString::to_string).collect();
                return Err(user_error(format!(
                    "nothing was imported from {file} because {} {} changed by someone \
                     else after the import read the stored policies; run the import again \
                     to plan against the current policies",
                    listed.join(", "),
                    if listed.len() == 1 { "was" } else { "were" }
                )));
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(format!(
        "Imported {file}: {} created, {} updated, {} skipped.",
        plan.created, plan.updated, plan.skipped
    ))
}

/// Builds the error that lists every bad row of a rejected import.
fn rejection(path: &Path, errors: &[RowError]) -> anyhow::Error {
    let mut sorted: Vec<&RowError> = errors.iter().collect();
    sorted.sort_by_key(|error| error.line);
    let listed: Vec<String> = sorted
        .iter()
        .map(|error| format!("  line {}: {}", error.line, error.message))
        .collect();
    user_error(format!(
        "nothing was imported from {} because {} {} invalid:\n{}",
        path.display(),
        errors.len(),
        if errors.len() == 1 {
            "problem is"
        } else {
            "problems are"
        },
        listed.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tollgate_protocol::check::PolicyKind;

    use super::*;
    use crate::cli::UserError;
    use crate::store::sqlite::SqliteStore;

    /// Parses `tollgate quota import` arguments as the binary does.
    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        import: ImportArgs,
    }

    fn import_args(file: &Path, db: &Path, extra: &[&str]) -> ImportArgs {
        let mut argv = vec![
            "import".to_owned(),
            file.display().to_string(),
            "--db".to_owned(),
            db.display().to_string(),
            "--identity-claim".to_owned(),
            "email".to_owned(),
        ];
        argv.extend(extra.iter().map(|arg| (*arg).to_owned()));
        Harness::try_parse_from(argv)
            .expect("the test's import arguments parse")
            .import
    }

    fn user_policy(identifier: &str, monthly: u64) -> Policy {
        Policy::new(PolicyKind::User, identifier, monthly, Utc::now()).expect("a valid policy")
    }

    async fn import_actions(store: &SqliteStore) -> usize {
        store
            .read_audit(100)
            .await
            .expect("the audit log reads")
            .iter()
            .filter(|entry| entry.action == "policy.import")
            .count()
    }

    #[tokio::test]
    async fn import_rejects_policy_changed_after_plan() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let db = folder.path().join("tollgate.db");
        let file = folder.path().join("policies.csv");
        std::fs::write(
            &file,
            "kind,identifier,monthly_limit\nuser,ann@example.com,2M\ngroup,eng,5M\n",
        )
        .expect("the import file is written");
        let store = SqliteStore::open(&db).expect("the store opens");
        store
            .put_policy(&user_policy("ann@example.com", 1_000_000))
            .await
            .expect("the first policy is stored");

        let args = import_args(&file, &db, &["--update"]);
        let policies = read_import(&args).expect("every row is valid");
        let plan = plan_import(&args, policies, &store)
            .await
            .expect("the import plans");

        // Another admin changes the policy through its own connection
        // between the plan and the apply.
        let other_admin = SqliteStore::open(&db).expect("a second connection opens");
        let concurrent = user_policy("ann@example.com", 3_000_000);
        other_admin
            .put_policy(&concurrent)
            .await
            .expect("the concurrent change is stored");

        let error = apply_import(&args, plan, &store)
            .await
            .expect_err("a stale plan must not apply");
        assert!(
            error.downcast_ref::<UserError>().is_some(),
            "a conflict exits as a user error: {error:#}"
        );
        let message = format!("{error:#}");
        assert!(
            message.contains("nothing was imported"),
            "says nothing changed: {message}"
        );
        assert!(
            message.contains("user:ann@example.com"),
            "names the changed policy: {message}"
        );
        assert!(
            !message.contains("group:eng"),
            "names only the changed policy: {message}"
        );
        assert!(
            message.contains("run the import again"),
            "says what to do: {message}"
        );
        assert_eq!(
            store.list_policies().await.expect("the policies read"),
            [concurrent],
            "the store keeps the concurrent change and gets no new policy"
        );
        assert_eq!(import_actions(&store).await, 0, "no import audit entry");

        // Planned again, the import applies over the current policy.
        let policies = read_import(&args).expect("every row is valid");
        let plan = plan_import(&args, policies, &store)
            .await
            .expect("the import plans");
        apply_import(&args, plan, &store)
            .await
            .expect("a fresh plan applies");
        let limits: Vec<(String, u64)> = store
            .list_policies()
            .await
            .expect("the policies read")
            .into_iter()
            .map(|policy| (policy.identifier, policy.monthly_limit))
            .collect();
        assert_eq!(
            limits,
            [
                ("ann@example.com".to_owned(), 2_000_000),
                ("eng".to_owned(), 5_000_000)
            ]
        );
    }

    #[tokio::test]
    async fn second_of_two_imports_conflicts() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let db = folder.path().join("tollgate.db");
        let first_file = folder.path().join("first.json");
        let second_file = folder.path().join("second.csv");
        std::fs::write(
            &first_file,
            r#"[{"kind": "group", "identifier": "eng", "monthly_limit": "5M"}]"#,
        )
        .expect("the first import file is written");
        std::fs::write(
            &second_file,
            "kind,identifier,monthly_limit\ngroup,eng,7M\ngroup,ops,1M\n",
        )
        .expect("the second import file is written");
        let store = SqliteStore::open(&db).expect("the store opens");

        // Both imports read an empty store, so both plan to create eng.
        let first_args = import_args(&first_file, &db, &[]);
        let second_args = import_args(&second_file, &db, &[]);
        let first_plan = plan_import(
            &first_args,
            read_import(&first_args).expect("valid rows"),
            &store,
        )
        .await
        .expect("the first import plans");
        let second_plan = plan_import(
            &second_args,
            read_import(&second_args).expect("valid rows"),
            &store,
        )
        .await
        .expect("the second import plans");

        apply_import(&first_args, first_plan, &store)
            .await
            .expect("the first import applies");
        let error = apply_import(&second_args, second_plan, &store)
            .await
            .expect_err("the second import's plan is stale");
        let message = format!("{error:#}");
        assert!(
            message.contains("group:eng"),
            "names the policy the first import created: {message}"
        );
        assert!(
            !message.contains("group:ops"),
            "does not name the policy nobody changed: {message}"
        );
        let stored = store.list_policies().await.expect("the policies read");
        assert_eq!(stored.len(), 1, "the second import created nothing");
        assert_eq!(stored[0].monthly_limit, 5_000_000, "the first import's eng");
        assert_eq!(import_actions(&store).await, 1, "one import audit entry");
    }
}
