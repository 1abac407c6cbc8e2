"""Head models: identity code + expression code -> signed distance field."""
