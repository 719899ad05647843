import sys

from tasks.grpo.train import main

sys.exit(main())
