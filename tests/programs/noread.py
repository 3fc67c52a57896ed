"""Never reads its stdin."""

import time

print("ready", flush=True)
time.sleep(300)
