SELECT ai_translate('the cat sat in the park .', 't5', num_beams => 2);
