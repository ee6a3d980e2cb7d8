// The console page (placeholder until the front end lands).
