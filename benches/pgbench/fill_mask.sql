SELECT * FROM ai_fill_mask('the cat sat in the [MASK] .', 'mlm', 3);
