"""Running a study: claim a trial, train it, beat for it, write its reports, record its end;
worker processes on one machine."""
