#[pgrx::pg_schema]
mod tests {
    use crate::tests::fixture;
    use pgrx::prelude::*;

    #[pg_test]
    fn fill_mask_answers_as_transformers_does() {
        Spi::run(&format!("SELECT ai_load_model('mlm', '{}')", fixture("bert-mlm"))).unwrap();
        // tests/fixtures/golden/bert-mlm.json, first case.
        let rows: Vec<(String, f32, String)> = Spi::connect(|c| {
            c.select(
                "SELECT token, score, sequence FROM ai_fill_mask('the cat sat in the [MASK] .', 'mlm', 3)",
                None,
                &[],
            )
            .unwrap()
            .map(|r| (r.get(1).unwrap().unwrap(), r.get(2).unwrap().unwrap(), r.get(3).unwrap().unwrap()))
            .collect()
        });
        let expected = [
            ("field", 0.269_203_1, "the cat sat in the field."),
            ("house", 0.203_460_74, "the cat sat in the house."),
            ("park", 0.161_535_26, "the cat sat in the park."),
        ];
        assert_eq!(rows.len(), 3);
        for ((token, score, sequence), (t, s, q)) in rows.iter().zip(expected) {
            assert_eq!((token.as_str(), sequence.as_str()), (t, q));
            assert!((score - s).abs() < 1e-4, "{token}: {score} vs {s}");
        }
    }

    #[pg_test]
    fn array_forms_answer_as_single_calls() {
        Spi::run(&format!("SELECT ai_load_model('clf', '{}')", fixture("bert-classifier"))).unwrap();
        let same = Spi::get_one::<bool>(
            "WITH input(ord, t) AS (VALUES (1, 'i love eating pasta .'), (2, NULL), (3, 'heavy snow is expected tonight .'))
             SELECT ai_classify_label(ARRAY(SELECT t FROM input ORDER BY ord), 'clf')
                    = ARRAY(SELECT CASE WHEN t IS NULL THEN NULL ELSE ai_classify_label(t, 'clf') END FROM input ORDER BY ord)",
        )
        .unwrap();
        assert_eq!(same, Some(true));
        let labels = Spi::get_one::<Vec<Option<String>>>(
            "SELECT ai_classify_label(ARRAY['i love eating pasta .', NULL, 'heavy snow is expected tonight .'], 'clf')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(labels, vec![Some("food".into()), None, Some("weather".into())]);
    }
}
