SELECT ai_classify_label('heavy snow is expected tonight .', 'topic');
