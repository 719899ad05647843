"""r1flow stages and their maths. Importing the package first fixes the process's hub access
(tasks/hub.py): it must happen before any hub library is imported."""

from tasks import hub as _hub

_hub.configure()
