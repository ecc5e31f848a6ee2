"""What a run reports: the summary, the table, the report page and its plots, sample journeys."""
