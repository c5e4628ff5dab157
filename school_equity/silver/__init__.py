"""Silver layer of the survey stream: parse Bronze batches, merge them into Delta."""
