"""Entry point of a validator worker process: `python -m tosca._worker_main <socket fd>`."""

import sys

from tosca.worker import main

if __name__ == "__main__":
    main(sys.argv)
