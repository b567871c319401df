#[pgrx::pg_schema]
mod tests {
    use crate::tests::fixture;
    use pgrx::prelude::*;

    fn load(name: &str, dir: &str) {
        let sql = format!("SELECT ai_load_model('{name}', '{}')", fixture(dir));
        assert_eq!(Spi::get_one::<String>(&sql).unwrap().as_deref(), Some(name));
    }

    #[pg_test]
    fn load_model_registers_task_architecture_and_hash() {
        load("mlm", "bert-mlm");
        load("classifier", "distilbert-classifier");
        load("tagger", "bert-ner");
        let rows: Vec<(String, String, String)> = Spi::connect(|c| {
            c.select("SELECT name, task, architecture FROM ai.models ORDER BY name", None, &[])
                .unwrap()
                .map(|r| (r.get(1).unwrap().unwrap(), r.get(2).unwrap().unwrap(), r.get(3).unwrap().unwrap()))
                .collect()
        });
        let expected = [
            ("classifier", "text-classification", "DistilBertForSequenceClassification"),
            ("mlm", "fill-mask", "BertForMaskedLM"),
            ("tagger", "token-classification", "BertForTokenClassification"),
        ];
        assert_eq!(rows, expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));
        let sha = Spi::get_one::<String>("SELECT sha256 FROM ai.models WHERE name = 'mlm'").unwrap().unwrap();
        assert_eq!(sha.len(), 64);
        assert!(sha.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[pg_test]
    fn the_backend_keeps_a_model_loaded_until_unloaded() {
        load("mlm", "bert-mlm");
        let loaded = || Spi::get_one::<i64>("SELECT count(*) FROM ai_loaded_models() WHERE name = 'mlm'").unwrap();
        assert_eq!(loaded(), Some(1));
        Spi::run("SELECT * FROM ai_fill_mask('the cat sat in the [MASK] .', 'mlm')").unwrap();
        assert_eq!(Spi::get_one::<i64>("SELECT calls FROM ai_loaded_models() WHERE name = 'mlm'").unwrap(), Some(1));
        assert_eq!(Spi::get_one::<bool>("SELECT ai_unload_model('mlm')").unwrap(), Some(true));
        assert_eq!(loaded(), Some(0));
        assert_eq!(Spi::get_one::<bool>("SELECT ai_drop_model('mlm')").unwrap(), Some(true));
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM ai.models").unwrap(), Some(0));
    }

    #[pg_test]
    fn a_stored_model_answers_from_its_rows_alone() {
        let sql = format!("SELECT ai_load_model('kept', '{}', store => true)", fixture("bert-classifier"));
        Spi::run(&sql).unwrap();
        let files =
            Spi::get_one::<i64>("SELECT count(DISTINCT path) FROM ai.model_files WHERE model = 'kept'").unwrap();
        assert_eq!(files, Some(4), "config, tokenizer, tokenizer_config and weights");
        // Point the source nowhere: the answer must come from the stored files.
        Spi::run("UPDATE ai.models SET source = '/nonexistent' WHERE name = 'kept'").unwrap();
        Spi::run("SELECT ai_unload_model('kept')").unwrap();
        let label = Spi::get_one::<String>("SELECT ai_classify_label('grace won the tennis game .', 'kept')").unwrap();
        assert_eq!(label.as_deref(), Some("sport"));
    }
}
