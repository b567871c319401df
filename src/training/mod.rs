//! Training from SQL: the rows of a table, view or query read through a cursor, progress and interrupts, and the
//! trained model stored in the database (ai.model_files) and registered in ai.models in the caller's transaction,
//! so a cancelled or failed run leaves nothing behind. `jobs` runs the same in background workers; `launcher`
//! resumes interrupted jobs after a restart. The SQL functions (api::train, api::jobs) are adapters over these.

pub mod jobs;
pub mod launcher;

use crate::engine::error::{AiError, ErrorKind, Result};
use crate::engine::files::ModelFiles;
use crate::engine::models::AnyModel;
use crate::engine::train::{self, DataSource, Example, Objective, Progress, StepReport, TrainOptions};
use crate::error::{raise, OrRaise};
use crate::store::{cache, catalog, stored_files};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::time::Instant;

/// Rows fetched from the cursor at a time: training never holds the whole source in memory.
const FETCH_ROWS: i64 = 256;

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(crate) fn sql_error(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    ErrorReport::new(code, message, "pg_ai").set_hint(hint).report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// The source as a query: a SELECT (or WITH, VALUES, TABLE) as given, or every row of a table or view.
fn source_query(client: &SpiClient, source: &str) -> String {
    // A query starts with its keyword as a whole word ("tablets" is a table) or a parenthesis.
    let text = source.trim_start();
    let first = text.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("").to_ascii_lowercase();
    if text.starts_with('(') || ["select", "with", "values", "table"].contains(&first.as_str()) {
        return source.to_string();
    }
    let relation = client
        .select("SELECT pg_catalog.to_regclass($1)::text", Some(1), &[source.into()])
        .and_then(|rows| rows.first().get_one::<String>())
        .unwrap_or(None);
    match relation {
        Some(relation) => format!("SELECT * FROM {relation}"),
        None => sql_error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation \"{source}\" does not exist"),
            "Give a table or view name, or a SELECT query.",
        ),
    }
}

/// Checks that the source has the columns training reads, and returns the query that reads them: the text as
/// text, then a label as text or tags as text[].
fn training_query(client: &SpiClient, query: &str, columns: &[Column], extra: Extra) -> String {
    let probe = client
        .select(&format!("SELECT * FROM ({query}) AS source LIMIT 0"), None, &[])
        .unwrap_or_else(|e| error!("cannot read the training source: {e}"));
    let have: Vec<String> = (1..=probe.columns().unwrap_or(0)).filter_map(|i| probe.column_name(i).ok()).collect();
    for Column { option, name } in columns {
        if !have.iter().any(|h| h == name) {
            sql_error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("the training source has no column \"{name}\""),
                &format!(
                    "Its columns: {}. Name yours in the options, e.g. '{{\"{option}\": \"body\"}}'.",
                    have.join(", ")
                ),
            );
        }
    }
    let select: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let tags = i == 1 && matches!(extra, Extra::Tags);
            format!("{}::{}", quote_ident(&c.name), if tags { "text[]" } else { "text" })
        })
        .collect();
    format!("SELECT {} FROM ({query}) AS source", select.join(", "))
}

/// The rows, read through a cursor chunk by chunk; NULL texts come through as empty (the trainer skips
/// and counts them).
pub(crate) struct Rows<'a> {
    pub client: &'a SpiClient<'a>,
    pub query: &'a RowsQuery,
}

/// What a training run reads from its source.
#[derive(Debug, Clone)]
pub(crate) struct RowsQuery {
    pub sql: String,
    pub extra: Extra,
}

/// What each row carries after its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extra {
    Nothing,
    /// A class label (text-classification).
    Label,
    /// One tag per whitespace-separated word (token-classification).
    Tags,
    /// The text the model must answer (seq2seq).
    Target,
}

impl DataSource for Rows<'_> {
    fn pass(&mut self, each: &mut dyn FnMut(Vec<Example>) -> Result<()>) -> Result<()> {
        let spi = |e: pgrx::spi::Error| AiError::internal(format!("cannot read the training source: {e}"));
        let mut cursor = self.client.try_open_cursor(self.query.sql.as_str(), &[]).map_err(spi)?;
        loop {
            let chunk = {
                let rows = cursor.fetch(FETCH_ROWS).map_err(spi)?;
                let mut chunk = Vec::with_capacity(rows.len());
                for row in rows {
                    let text = row.get::<String>(1).map_err(spi)?.unwrap_or_default();
                    let (mut label, mut target, mut tags) = (None, None, None);
                    match self.query.extra {
                        Extra::Nothing => {}
                        Extra::Label => label = row.get::<String>(2).map_err(spi)?,
                        Extra::Target => target = row.get::<String>(2).map_err(spi)?,
                        Extra::Tags => tags = row.get::<Vec<Option<String>>>(2).map_err(spi)?,
                    }
                    chunk.push(Example { text, label, target, tags });
                }
                chunk
            };
            // SAFETY: the fetched rows were copied above; free them so a large source streams in bounded memory.
            unsafe { pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable) };
            if chunk.is_empty() {
                return Ok(());
            }
            each(chunk)?;
        }
    }
}

/// Checks for cancel and statement_timeout, sends NOTICEs and shows progress in pg_stat_activity
/// (the ai.training view).
pub(crate) struct SqlProgress<'a> {
    pub model: &'a str,
}

impl Progress for SqlProgress<'_> {
    fn check(&mut self) -> Result<()> {
        crate::error::check_interrupts();
        Ok(())
    }

    fn interrupted(&mut self) -> bool {
        // SAFETY: flags the signal handlers set (sig_atomic_t), read on the backend's thread.
        unsafe {
            (&raw const pg_sys::QueryCancelPending).read_volatile() != 0
                || (&raw const pg_sys::ProcDiePending).read_volatile() != 0
        }
    }

    fn report(&mut self, s: &StepReport) {
        notice!(
            "step {}/{}: loss {:.4}, {:.0} tokens/s, about {:.0} s left",
            s.step,
            s.total_steps,
            s.loss,
            s.tokens_per_second,
            s.seconds_left
        );
        let activity = format!(
            "pg_ai training: step={} total={} loss={:.4} tokens_per_second={:.0} seconds_left={:.0} model={}",
            s.step, s.total_steps, s.loss, s.tokens_per_second, s.seconds_left, self.model
        );
        if let Ok(activity) = std::ffi::CString::new(activity) {
            // SAFETY: a backend may always report its own activity; the string is copied.
            unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, activity.as_ptr()) };
        }
    }
}

/// The options without the column names, which are the SQL side's business.
fn trainer_options(options: &serde_json::Value) -> serde_json::Value {
    let mut trainer = options.clone();
    if let Some(map) = trainer.as_object_mut() {
        for key in COLUMN_OPTIONS {
            map.remove(key);
        }
    }
    trainer
}

/// Options that name the source's columns.
const COLUMN_OPTIONS: [&str; 5] = ["text_column", "label_column", "tags_column", "source_column", "target_column"];

/// A column training reads, and the option that names it.
struct Column {
    option: &'static str,
    name: String,
}

/// The columns a training objective reads, from the options (defaults: text, label, tags, source, target).
fn columns(objective: Objective, options: &serde_json::Value) -> (Vec<Column>, Extra) {
    let column = |option: &'static str, default: &str| match options.get(option) {
        None => Column { option, name: default.to_string() },
        Some(serde_json::Value::String(name)) => Column { option, name: name.clone() },
        Some(_) => raise(AiError::invalid(format!("option \"{option}\" must be a column name in a string"))),
    };
    match objective {
        Objective::TextClassification => {
            (vec![column("text_column", "text"), column("label_column", "label")], Extra::Label)
        }
        Objective::TokenClassification => {
            (vec![column("text_column", "text"), column("tags_column", "tags")], Extra::Tags)
        }
        Objective::Seq2Seq => {
            (vec![column("source_column", "source"), column("target_column", "target")], Extra::Target)
        }
        _ => (vec![column("text_column", "text")], Extra::Nothing),
    }
}

/// A training request as the SQL functions receive it.
pub(crate) struct Request<'a> {
    pub name: &'a str,
    pub source: &'a str,
    pub objective: Objective,
    pub options: &'a serde_json::Value,
    /// The base model of a fine-tuning run.
    pub parent: Option<&'a str>,
}

impl Request<'_> {
    pub fn trainer_options(&self) -> TrainOptions {
        TrainOptions::from_json(&trainer_options(self.options)).or_raise()
    }

    /// The query that reads the source's training columns as text; checks that they exist.
    pub fn rows_query(&self, client: &SpiClient) -> RowsQuery {
        let query = source_query(client, self.source);
        let (columns, extra) = columns(self.objective, self.options);
        RowsQuery { sql: training_query(client, &query, &columns, extra), extra }
    }
}

/// What a run starts from.
pub(crate) enum Start {
    Pretrain,
    /// A base model's directory.
    Finetune(std::path::PathBuf),
    /// A background job's checkpoint directory.
    Resume(std::path::PathBuf),
}

impl Start {
    /// The base model's directory, written out first if it is stored in the database.
    pub fn finetune(base_model: &str) -> Start {
        let base = find_base(base_model);
        Start::Finetune(crate::store::files_of(&base).or_raise().dir)
    }

    pub fn train(
        &self,
        objective: Objective,
        data: &mut dyn DataSource,
        options: &TrainOptions,
        progress: &mut dyn Progress,
        out: &std::path::Path,
    ) -> Result<train::TrainOutcome> {
        match self {
            Start::Pretrain => train::pretrain(objective, data, options, progress, out),
            Start::Finetune(base) => train::finetune(base, objective, data, options, progress, out),
            Start::Resume(checkpoint) => train::resume(checkpoint, objective, data, options, progress, out),
        }
    }
}

/// Trains in the caller's transaction, then stores and registers the result.
pub(crate) fn train_now(request: &Request, start: Start) -> String {
    catalog::require_new_name(request.name);
    let options = request.trainer_options();
    crate::guc::apply_compute_settings();
    // The trained model is loaded where pg_ai.device says: an unusable setting fails now, not after training.
    crate::guc::load_options().placement.device().or_raise();
    let started = Instant::now();
    let scratch = Scratch::new();
    let outcome = crate::store::citus::reading_training_source(|| {
        Spi::connect(|client| {
            let query = request.rows_query(client);
            let mut rows = Rows { client, query: &query };
            start.train(request.objective, &mut rows, &options, &mut SqlProgress { model: request.name }, &scratch.0)
        })
    });
    register(request, &scratch.0, outcome.or_raise(), started)
}

/// Stores the model trained into `out_dir` in the database and registers it in ai.models.
pub(crate) fn register(
    request: &Request,
    out_dir: &std::path::Path,
    outcome: train::TrainOutcome,
    started: Instant,
) -> String {
    let name = request.name;
    // Loading it back checks that the inference code reads what training wrote.
    let files = ModelFiles::in_dir(out_dir.to_path_buf()).or_raise();
    let (sha256, files_sha256) = files.sha256_with_digest(&mut crate::error::check_interrupts).or_raise();
    let model = AnyModel::load(&files, &crate::guc::load_options()).or_raise();
    let training = serde_json::json!({
        "objective": request.objective.name(),
        "source": request.source,
        "options": request.options,
        "metrics": outcome.metrics,
    });
    let entry = catalog::insert(catalog::NewModel {
        name,
        task: &outcome.task,
        architecture: &outcome.architecture,
        source: &format!("{}:{name}", if request.parent.is_some() { "ai_finetune" } else { "ai_pretrain" }),
        stored: true,
        config: model.config_json().clone(),
        sha256: &sha256,
        files_sha256: Some(&files_sha256),
        parent: request.parent,
        training: Some(training),
    });
    stored_files::store(name, &files).or_raise();
    // The loaded model holds its weights in memory, so its files may move into the server's copy.
    stored_files::adopt(out_dir, &files_sha256).or_raise();
    cache::insert(&entry, model, started.elapsed(), 0);
    name.to_string()
}

/// The training output directory, removed however the call ends (an ERROR, a cancel) unless `adopt` has
/// moved it into place.
pub(crate) struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        Scratch(stored_files::scratch_dir().or_raise())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks what can be checked before any row is read, so that a background job fails at once, not later.
pub(crate) fn check_request(name: &str, objective: &str, options: &serde_json::Value) -> Objective {
    catalog::require_new_name(name);
    let objective = Objective::parse(objective).or_raise();
    TrainOptions::from_json(&trainer_options(options)).or_raise();
    columns(objective, options);
    objective
}

/// The catalog row of the model to fine-tune; 42704 with a hint when there is none.
pub(crate) fn find_base(base_model: &str) -> catalog::CatalogEntry {
    catalog::find(base_model).unwrap_or_else(|| {
        raise(
            AiError::new(ErrorKind::UndefinedModel, format!("model \"{base_model}\" does not exist"))
                .with_hint("SELECT name, task FROM ai.models lists the models to start from."),
        )
    })
}
