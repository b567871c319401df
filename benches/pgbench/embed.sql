SELECT ai_embed('alice is eating bread .', 'topic');
