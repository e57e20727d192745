from databus.cli import main

main()
