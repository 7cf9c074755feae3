"""Reports: the schema of result rows, the files beside a report, tables, compare, merge, plot and
logs."""
