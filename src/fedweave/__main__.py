from fedweave.cli import main

main()
