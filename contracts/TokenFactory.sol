// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice The part of FeeCollector the factory calls; an interface so the factory does not compile it in.
interface IFeeCollector {
    function collectFee() external payable;
}

/// @title LaunchedToken
/// @notice A plain fixed-supply ERC-20: everything is minted once, to whoever launched it.
contract LaunchedToken is ERC20 {
    /// @dev `holder` is passed in because msg.sender here is the factory, not the creator.
    constructor(string memory name_, string memory symbol_, uint256 initialSupply, address holder)
        ERC20(name_, symbol_)
    {
        _mint(holder, initialSupply);
    }
}

/// @title TokenFactory
/// @notice Launches ERC-20 tokens for a fee paid to the platform's FeeCollector.
/// @dev `TokenCreated` is what off-chain metrics count (tokens launched per window, by eth_getLogs),
///      so its signature is part of the platform's interface: do not change it.
contract TokenFactory {
    /// @notice The least a launch must pay, in wei.
    uint256 public fee;
    /// @notice Where every launch payment goes; fixed so a factory can never be pointed elsewhere.
    address payable public immutable feeCollector;

    /// @param fee The whole amount paid (msg.value, at least the fee), all of it forwarded to the collector.
    event TokenCreated(
        address indexed token, address indexed creator, string name, string symbol, uint256 initialSupply, uint256 fee
    );

    error FeeTooLow(uint256 sent, uint256 required);
    error ZeroAddress();

    constructor(address payable feeCollector_, uint256 fee_) {
        if (feeCollector_ == address(0)) revert ZeroAddress();
        feeCollector = feeCollector_;
        fee = fee_;
    }

    /// @notice Deploys a new token minting `initialSupply` to the caller, and pays the collector.
    /// @dev Paying through `collectFee()` rather than a plain transfer means a paused collector
    ///      refuses the payment, so launches stop with fee intake during an incident.
    function createToken(string calldata name, string calldata symbol, uint256 initialSupply)
        external
        payable
        returns (address token)
    {
        if (msg.value < fee) revert FeeTooLow(msg.value, fee);
        token = address(new LaunchedToken(name, symbol, initialSupply, msg.sender));
        emit TokenCreated(token, msg.sender, name, symbol, initialSupply, msg.value);
        IFeeCollector(feeCollector).collectFee{value: msg.value}();
    }
}
