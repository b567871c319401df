SELECT ai_generate('bob lives in', 'gpt2', max_tokens => 8);
