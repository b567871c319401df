//! pg_ai's settings, all under the `pg_ai.` prefix.

use crate::engine::device::Placement;
use crate::engine::models::LoadOptions;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::path::PathBuf;

/// Compute threads per backend; 0 = one per core. Fixed at a backend's first model call.
static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// The Hugging Face cache that `hf:ORG/NAME` sources are read from; unset = the server's
/// HF_HUB_CACHE / HF_HOME environment, else ~/.cache/huggingface/hub of the server's user.
static HF_CACHE_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Cap on the weights one backend keeps loaded, in kB; least recently used models are evicted beyond it.
static MAX_CACHE_MEMORY: GucSetting<i32> = GucSetting::<i32>::new(4 << 20);

/// Directories models may be loaded from (comma-separated); unset = anywhere the server can read.
static MODEL_PATHS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Marks loaded weights mergeable for the kernel's same-page merging (KSM), so backends share identical pages.
static MERGE_MEMORY: GucSetting<bool> = GucSetting::<bool>::new(false);

/// The database the launcher worker connects to, to list the databases whose interrupted jobs it resumes.
static LAUNCHER_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// Freed memory a backend keeps for reuse once it runs models, in kB (see engine::allocator).
static KEEP_FREED_MEMORY: GucSetting<i32> =
    GucSetting::<i32>::new((crate::engine::allocator::DEFAULT_KEEP_FREED >> 10) as i32);

/// GPT-2 and Llama-family weights read from safetensors are held as 8-bit blocks (Q8_0).
static INT8_DECODERS: GucSetting<bool> = GucSetting::<bool>::new(false);
static INT8_ENCODERS: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Where encoder models loaded from now on run (see engine::device).
static DEVICE: GucSetting<DeviceSetting> = GucSetting::<DeviceSetting>::new(DeviceSetting::Cpu);

#[derive(pgrx::PostgresGucEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceSetting {
    #[name = c"cpu"]
    Cpu,
    #[name = c"cuda"]
    Cuda,
}

/// The most memory one call may take for what its inputs, the model's config or training options size, in MB;
/// 0 = a quarter of the server's memory (engine::budget).
static MAX_MEMORY_PER_CALL: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Reports each call's time by phase as a NOTICE.
static TIMING: GucSetting<bool> = GucSetting::<bool>::new(false);

/// GGUF weights that candle multiplies without SIMD (Q4_1, Q5_1, Q8_1) are held as Q8_0.
static GGUF_REQUANTIZE: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn init() {
    GucRegistry::define_int_guc(
        c"pg_ai.threads",
        c"Compute threads each backend uses for model inference (0 = one per core).",
        c"Read at a backend's first model call. With many connections, keep threads x connections near the core count.",
        &THREADS,
        0,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_ai.hf_cache_dir",
        c"Hugging Face cache directory searched by 'hf:ORG/NAME' model sources.",
        c"Unset: HF_HUB_CACHE or HF_HOME of the server, else ~/.cache/huggingface/hub. pg_ai never downloads.",
        &HF_CACHE_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_ai.max_cache_memory",
        c"Most memory the models loaded in one backend may hold; least recently used models are unloaded beyond it.",
        c"The model in use is always kept, even alone above the cap. 0 = no cap.",
        &MAX_CACHE_MEMORY,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_string_guc(
        c"pg_ai.model_paths",
        c"Comma-separated directories that ai_load_model may read models from.",
        c"Unset: any path the server can read (still only for superusers and pg_read_server_files members).",
        &MODEL_PATHS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_ai.merge_memory",
        c"Lets the kernel merge identical weight pages of backends that load the same model (Linux KSM).",
        c"Takes effect where the administrator runs KSM: echo 1 > /sys/kernel/mm/ksm/run.",
        &MERGE_MEMORY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_ai.gguf_requantize",
        c"Runs GGUF files whose weights are Q4_1, Q5_1 or Q8_1 as Q8_0, which has SIMD kernels: several times faster.",
        c"Costs memory (SmolLM2: 227 MB, not 200), moves answers slightly (README). For models loaded after.",
        &GGUF_REQUANTIZE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_ai.int8_decoders",
        c"Holds the weights of GPT-2 and Llama-family models loaded from safetensors as 8-bit blocks (Q8_0).",
        c"About half the memory and faster generation; answers move slightly (README, Benchmarks). Applies to models loaded after.",
        &INT8_DECODERS,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_ai.int8_encoders",
        c"Holds the weights of encoder models and their task heads in 8 bits.",
        c"40% of the memory; faster with AVX-512 VNNI, slower without it; answers move slightly (README). For models loaded after.",
        &INT8_ENCODERS,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"pg_ai.device",
        c"Where encoder models (BERT, DistilBERT, RoBERTa) loaded from now on run: cpu, or cuda (the first GPU).",
        c"cuda needs a build with the cuda feature (scripts/build-cuda.sh). Other models run on the CPU.",
        &DEVICE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_ai.timing",
        c"Reports where each model call's time goes (lookup and load, tokenize, forward, decode) as a NOTICE.",
        c"For finding out what to speed up; one NOTICE per call.",
        &TIMING,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_ai.keep_freed_memory",
        c"Freed memory a backend that runs models keeps for reuse instead of returning it to the kernel at once.",
        c"Tensor outputs are megabytes; returning each one costs page faults on the next. 0 = glibc's defaults.",
        &KEEP_FREED_MEMORY,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"pg_ai.max_memory_per_call",
        c"Most memory one pg_ai call may take for what its input, the model's config or training options size.",
        c"Checked before allocating: beyond it a call fails with 53200 instead of failing an allocation, which would end the backend. 0 = a quarter of the server's memory.",
        &MAX_MEMORY_PER_CALL,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_string_guc(
        c"pg_ai.launcher_database",
        c"Database the pg_ai launcher connects to when pg_ai is in shared_preload_libraries.",
        c"From there it lists all databases and resumes the training jobs a server stop interrupted.",
        &LAUNCHER_DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: called from _PG_init with a static C string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"pg_ai".as_ptr()) };
}

pub fn launcher_database() -> String {
    LAUNCHER_DATABASE.get().and_then(|s| s.into_string().ok()).unwrap_or_else(|| "postgres".to_string())
}

/// Applies the compute settings of this backend before model work: its thread count (fixed at the first call)
/// and the freed memory it keeps.
pub fn apply_compute_settings() {
    // Before the compute threads start: set later, the thresholds help less (engine/benches/train.rs: 2250 against
    // 2650 tokens/s).
    crate::engine::allocator::keep_freed_memory(KEEP_FREED_MEMORY.get().max(0) as usize * 1024);
    crate::engine::threads::configure(threads());
    apply_memory_budget();
}

/// How models load: the pg_ai.int8_*, pg_ai.device and pg_ai.gguf_requantize settings.
pub fn load_options() -> LoadOptions {
    LoadOptions {
        int8: crate::engine::kernels::int8::Int8 { encoders: INT8_ENCODERS.get(), decoders: INT8_DECODERS.get() },
        placement: match DEVICE.get() {
            DeviceSetting::Cpu => Placement::Cpu,
            DeviceSetting::Cuda => Placement::Cuda,
        },
        gguf_requantize: GGUF_REQUANTIZE.get(),
    }
}

/// Hands pg_ai.max_memory_per_call to the engine; each call does, as the setting may change between calls.
pub fn apply_memory_budget() {
    crate::engine::budget::set_limit(MAX_MEMORY_PER_CALL.get().max(0) as usize * (1 << 20));
}

pub fn threads() -> usize {
    THREADS.get().max(0) as usize
}

pub fn hf_cache_dir() -> Option<PathBuf> {
    HF_CACHE_DIR.get().and_then(|s| s.into_string().ok()).filter(|s| !s.is_empty()).map(PathBuf::from)
}

/// The cache cap in bytes; None = no cap.
pub fn max_cache_bytes() -> Option<usize> {
    let kb = MAX_CACHE_MEMORY.get();
    (kb > 0).then(|| kb as usize * 1024)
}

/// The directories models may be loaded from; empty = anywhere.
pub fn model_paths() -> Vec<PathBuf> {
    MODEL_PATHS
        .get()
        .and_then(|s| s.into_string().ok())
        .map(|s| s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect())
        .unwrap_or_default()
}

pub fn timing() -> bool {
    TIMING.get()
}

pub fn merge_memory() -> bool {
    MERGE_MEMORY.get()
}
