from services.common.service import run

from .main import main

run(main)
