"""`python -m offload.keeper`: what the keeper's client spawns (keeper_client.spawn_keeper)."""
from offload.keeper.server import main

main()
