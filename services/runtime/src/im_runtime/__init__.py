"""What every service process runs on (a library the services share; services never import each other)."""
