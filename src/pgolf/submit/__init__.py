"""pgolf.submit: what a submission counts and ships."""
