"""What a run reports: the stats JSON (:mod:`.stats_json`), the Markdown and PNG data report
(:mod:`.markdown`), the progress bar (:mod:`.progress`)."""
