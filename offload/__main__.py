from offload.entry import main

main()
