//! Sharded safetensors (model-0000N-of-0000M.safetensors with model.safetensors.index.json), as
//! save_pretrained writes for large models, load and answer exactly as the single file does.

use candle_core::{safetensors, Device, Tensor};
use pg_ai_engine::files::ModelFiles;
use pg_ai_engine::models::AnyModel;
use pg_ai_engine::tasks::fill_mask::fill_mask;
use std::collections::HashMap;
use std::path::PathBuf;

fn fill(dir: PathBuf) -> Vec<(String, f32)> {
    let files = ModelFiles::in_dir(dir).unwrap();
    let AnyModel::Encoder(m) = AnyModel::load(&files, &Default::default()).unwrap() else { panic!("an encoder") };
    let answers = fill_mask(&m, &["alice is eating [MASK] ."], 5, &mut || ()).unwrap();
    answers[0].iter().map(|f| (f.token.clone(), f.score)).collect()
}

#[test]
fn sharded_weights_answer_as_one_file() {
    let source = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("tests/fixtures/models/bert-mlm");
    let dir = std::env::temp_dir().join(format!("pg_ai_sharded_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(source.join(f), dir.join(f)).unwrap();
    }
    let tensors: HashMap<String, Tensor> = safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let subset: HashMap<String, Tensor> = part.iter().map(|n| ((*n).clone(), tensors[*n].clone())).collect();
        safetensors::save(&subset, dir.join(shard)).unwrap();
        for n in part.iter() {
            weight_map.insert((*n).clone(), shard.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    assert_eq!(ModelFiles::in_dir(dir.clone()).unwrap().weights.len(), 2);
    assert_eq!(fill(dir.clone()), fill(source));
    std::fs::remove_dir_all(dir).unwrap();
}
