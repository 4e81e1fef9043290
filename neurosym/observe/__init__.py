"""What a run reports and how it is read back: the recorder (``recorder``) over ``events.jsonl``
(``events``), the trackers (``tracking``) and the progress display (``progress``); the summary a
finished run prints (``summary``), its picture (``report``) and the system prompt's history
(``prompt_history``)."""
